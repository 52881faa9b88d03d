import type { KeyValueStore } from "../../platform/kv";
import type { Logger } from "../../platform/logger";
import { type PublicUser, toPublicUser } from "../users/model";
import type { UsersRepo } from "../users/repo";
import type { Claims } from "./model";
import type { AuthRepo, RevocationRecorder } from "./repo";

const userKey = (id: string) => `user:${id}`;
const versionKey = (id: string) => `userv:${id}`;
const tokenKey = (jti: string) => `revoked:jti:${jti}`;
const sessionKey = (sid: string) => `revoked:sid:${sid}`;
/** Set by a complete refill; every cached user carries it. Gone (flush, restart, distrust): ask the database. */
const GENERATION_KEY = "auth:generation";
/** The highest database change (`auth_change_seq`) the store has applied. */
const WATERMARK_KEY = "auth:watermark";
const YEAR_SECONDS = 365 * 86_400;
/** How often a trusted store is compared with the database; an untrusted one is retried sooner. */
const CHECK_INTERVAL_MS = 2000;
const RETRY_INTERVAL_MS = 250;
const REFILL_BATCH = 500;
/** How far before the previous check a replay looks back: the interval's overlap and clock skew between instances. */
const REPLAY_MARGIN_MS = 10_000;

export interface RevokeRequest {
  userId: string;
  /** An access token to revoke by its `jti`. */
  token?: Claims;
  /** Session ids (only the user's own are touched), or every live session of the user. */
  sessions?: string[] | "all";
  /** With "all": the session that stays. */
  keep?: string;
}

export interface AccessState {
  user: PublicUser | undefined;
  revoked: boolean;
}

interface CachedUser {
  /** Generation and user version the entry was read under; it is valid only while both are current. */
  g: string;
  v: string;
  u: PublicUser;
}

/**
 * "Who does this token stand for right now?": the user and whether the token is revoked. The database
 * is the record; the key-value store is a cache that is used only while it can be trusted:
 * - every change (a user's, a revocation) advances `auth_change_seq` in the database and raises the
 *   store's watermark together with the change, so a store that lost writes (a refused write, a restart
 *   from an old snapshot) is found behind and refilled before it is trusted again;
 * - a cached user is valid only under the generation and the user's version it was read under, and it
 *   is written only if neither moved meanwhile (so a slow read cannot put back a row a change replaced);
 * - a write the store refuses makes it untrusted here at once (and for every instance, by deleting the
 *   generation) until a refill succeeds; a new connection makes it untrusted until a check passes.
 * With `cacheable` false (several instances on one Postgres and no Redis) nothing is cached at all.
 */
export function createAccessState(deps: {
  kv: KeyValueStore;
  cacheable: boolean;
  repo: AuthRepo;
  users: UsersRepo;
  accessTtlSeconds: number;
  userTtlSeconds: number;
  logger: Logger;
  /** Told after every change that can end a user's access (open sockets are rechecked then). */
  onChange?: (userId: string) => void;
}) {
  const { kv, cacheable, repo, users, accessTtlSeconds, userTtlSeconds, logger, onChange } = deps;
  let trusted = false;
  /** The store may lack a change we made: refill it, whatever the watermark says. */
  let mustRefill = false;
  /** Redis failed us since the last check: compare its watermark with the database's latest. */
  let sawError = true;
  let checkedConnection = -1;
  let lastSeen: number | undefined;
  let lastCheckStarted: number | undefined;
  let lastCheck = 0;
  let checking: Promise<void> | undefined;
  let evictedBefore: number | undefined;
  let warnedPolicy = false;
  let lastFailure: string | undefined;
  /** Writes the store refused so far; a check that saw one happen meanwhile proves nothing. */
  let refusedWrites = 0;

  /** The store entries that say these tokens and sessions are revoked, for as long as that can matter. */
  function markers(revoked: {
    tokens: { jti: string; expiresAt: Date }[];
    sessions: { id: string; revokedAt: Date | null }[];
  }) {
    const now = Date.now();
    return [
      ...revoked.tokens.map((t) => ({
        key: tokenKey(t.jti),
        value: "1",
        ttlSeconds: (t.expiresAt.getTime() - now) / 1000,
      })),
      ...revoked.sessions.map((s) => ({
        key: sessionKey(s.id),
        value: "1",
        ttlSeconds: accessTtlSeconds - (now - (s.revokedAt as Date).getTime()) / 1000,
      })),
    ].filter((entry) => entry.ttlSeconds >= 1);
  }

  async function writeInBatches(entries: { key: string; value: string; ttlSeconds: number }[]) {
    for (let i = 0; i < entries.length; i += REFILL_BATCH) await kv.commit({ set: entries.slice(i, i + REFILL_BATCH) });
  }

  async function refill(watermark: number) {
    const entries = markers(await repo.liveRevocations(new Date(Date.now() - accessTtlSeconds * 1000)));
    await writeInBatches(entries);
    // A new generation: users cached before it (maybe stale) are ignored from now on.
    await kv.commit({
      set: [{ key: GENERATION_KEY, value: crypto.randomUUID(), ttlSeconds: YEAR_SECONDS }],
      raise: { key: WATERMARK_KEY, value: watermark },
    });
    logger.info("auth cache refilled", { revocations: entries.length, watermark });
  }

  /**
   * Writes again what changed in the database lately: a change whose own cache write never happened
   * (the process died in between) is healed here, whatever the watermark says.
   */
  async function replay(since: Date) {
    const recent = await repo.changesSince(since);
    // Fresh values: writing back any earlier one could revive an entry cached under it.
    const versions = recent.users.map((id) => ({
      key: versionKey(id),
      value: crypto.randomUUID(),
      ttlSeconds: userTtlSeconds + 60,
    }));
    await writeInBatches([...markers(recent), ...versions]);
  }

  async function check() {
    const startedAt = Date.now();
    const connection = kv.connections;
    const refusedBefore = refusedWrites;
    const latest = await repo.currentChange();
    const [[generation, watermark], { policy, evicted }] = await Promise.all([
      kv.getMany([GENERATION_KEY, WATERMARK_KEY]),
      kv.evictions(),
    ]);
    if (policy !== "noeviction") {
      // A store that may drop a revocation marker by itself can never be trusted to say "not revoked".
      if (!warnedPolicy) {
        warnedPolicy = true;
        logger.error(
          "redis maxmemory-policy is not noeviction; auth cache disabled (set maxmemory-policy noeviction)",
          {
            policy,
          },
        );
      }
      throw new Error(`maxmemory-policy ${policy}`);
    }
    // Changes older than the previous check have had a whole interval to reach the store; after an
    // error or a new connection (a restart, maybe from an old snapshot) every change must be there.
    const suspect = sawError || lastSeen === undefined || connection !== checkedConnection;
    const due = suspect ? latest : (lastSeen as number);
    const evictedSince = evictedBefore !== undefined && evicted > evictedBefore;
    if (mustRefill || evictedSince || !generation || Number(watermark ?? 0) < due) await refill(latest);
    else if (lastCheckStarted !== undefined) await replay(new Date(lastCheckStarted - REPLAY_MARGIN_MS));
    evictedBefore = evicted;
    if (refusedWrites !== refusedBefore) return;
    trusted = true;
    mustRefill = false;
    sawError = false;
    checkedConnection = connection;
    lastSeen = latest;
    lastCheckStarted = startedAt;
  }

  /** Compares the store with the database in the background, at most once per interval. */
  function maybeCheck() {
    const interval = trusted ? CHECK_INTERVAL_MS : RETRY_INTERVAL_MS;
    if (checking || Date.now() - lastCheck < interval) return;
    lastCheck = Date.now();
    checking = check()
      .catch((error: Error) => {
        trusted = false;
        // Once per distinct reason (a Redis that denies INFO would otherwise be silent), then debug.
        const log = error.message === lastFailure ? logger.debug : logger.warn;
        lastFailure = error.message;
        log("auth cache check failed; using the database", { error: error.message });
      })
      .finally(() => {
        checking = undefined;
      });
  }

  /** The store did not take a change: nobody may trust it until a refill has put the change there. */
  async function distrust(error: Error) {
    refusedWrites++;
    trusted = false;
    mustRefill = true;
    sawError = true;
    logger.warn("auth cache write failed; using the database until it is refilled", { error: error.message });
    // Accepted even by a Redis out of memory; if Redis is unreachable the watermark tells the others.
    await kv.del(GENERATION_KEY).catch(() => {});
    maybeCheck();
  }

  /**
   * Records a change in the database's counter and in the store, with whatever the store must hold. A
   * user's version becomes the change's number: unique, so a version key that expired and came back can
   * never match an entry cached under an older one.
   */
  async function changed(write: { set?: { key: string; value: string; ttlSeconds: number }[]; userId?: string }) {
    if (!cacheable) return;
    try {
      const watermark = await repo.nextChange();
      const version = write.userId
        ? [{ key: versionKey(write.userId), value: String(watermark), ttlSeconds: userTtlSeconds + 60 }]
        : [];
      await kv.commit({ set: [...(write.set ?? []), ...version], raise: { key: WATERMARK_KEY, value: watermark } });
    } catch (error) {
      // The database has the change; until the store has it too, nobody may trust the store.
      await distrust(error as Error);
    }
  }

  async function fromDatabase(claims: Claims): Promise<AccessState> {
    const state = await repo.accessState(claims.sub, claims.jti, claims.sid as string);
    return { user: state && toPublicUser(state.user), revoked: state?.revoked ?? false };
  }

  function cachedUser(entry: string | null, generation: string, version: string): PublicUser | undefined {
    if (!entry) return undefined;
    const cached = JSON.parse(entry) as CachedUser;
    return cached.g === generation && cached.v === version ? cached.u : undefined;
  }

  /** Caches a row read under `generation`/`version`, unless either has moved since. */
  async function put(user: PublicUser, generation: string, version: string | null) {
    const entry: CachedUser = { g: generation, v: version ?? "0", u: user };
    await kv
      .commit({
        expect: { [GENERATION_KEY]: generation, [versionKey(user.id)]: version },
        set: [{ key: userKey(user.id), value: JSON.stringify(entry), ttlSeconds: userTtlSeconds }],
      })
      .catch((error: Error) => logger.debug("user cache write failed", { error: error.message }));
  }

  /**
   * Revokes what `request` names, for one user: an access token (until it expires) and sessions (the
   * listed ones, or all but `keep`), which revokes every access token they issued (their `sid`) for as
   * long as one could live. `record` runs inside the same transaction with the sessions actually
   * revoked (an audit event). Returns those sessions' ids.
   */
  async function revoke(request: RevokeRequest, record?: RevocationRecorder): Promise<string[]> {
    const { token } = request;
    const ids = await repo.revoke(
      { ...request, token: token && { jti: token.jti, expiresAt: new Date(token.exp * 1000) } },
      record,
    );
    const set = ids.map((id) => ({ key: sessionKey(id), value: "1", ttlSeconds: accessTtlSeconds }));
    if (token) set.push({ key: tokenKey(token.jti), value: "1", ttlSeconds: token.exp - Date.now() / 1000 });
    if (set.length === 0) return ids;
    await changed({ set });
    onChange?.(request.userId);
    return ids;
  }

  return {
    /** One store round trip when the store is trusted, else one database round trip. */
    async lookup(claims: Claims): Promise<AccessState> {
      if (!cacheable) return fromDatabase(claims);
      maybeCheck();
      const sid = claims.sid as string;
      const keys = [userKey(claims.sub), versionKey(claims.sub), tokenKey(claims.jti), sessionKey(sid), GENERATION_KEY];
      let values: (string | null)[];
      try {
        values = await kv.getMany(keys);
      } catch {
        sawError = true;
        trusted = false;
        return fromDatabase(claims);
      }
      const [entry = null, version, tokenRevoked, sessionRevoked, generation] = values;
      // A revocation is never undone: a marker is the answer even from a store we do not trust.
      if (tokenRevoked || sessionRevoked) return { user: undefined, revoked: true };
      if (!trusted || !generation || kv.connections !== checkedConnection) {
        if (kv.connections !== checkedConnection) trusted = false;
        return fromDatabase(claims);
      }
      const cached = cachedUser(entry, generation, version ?? "0");
      if (cached) return { user: cached, revoked: false };
      const row = await users.findById(claims.sub);
      const user = row && toPublicUser(row);
      if (user) await put(user, generation, version ?? null);
      return { user, revoked: false };
    },

    /** Every change to a user row must come through here, after the database has it. */
    async userChanged(userId: string) {
      await changed({ userId });
      onChange?.(userId);
    },

    revoke,

    /** Ends every login of a user except `keep`: refresh tokens stop at once, access tokens too. */
    async revokeUserSessions(userId: string, keep?: string) {
      await revoke({ userId, sessions: "all", keep });
    },
  };
}

export type AccessStateCache = ReturnType<typeof createAccessState>;
