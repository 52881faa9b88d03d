import type { Config } from "../../config";
import { errors } from "../../http/errors";
import type { RequestMeta } from "../../http/request-meta";
import type { Logger } from "../../platform/logger";
import { linkWithToken, type Mailer, sendInBackground } from "../../platform/mail";
import type { PasswordHasher } from "../../platform/passwords";
import type { AuditLog } from "../audit/service";
import { toPublicUser } from "../users/model";
import type { UsersRepo } from "../users/repo";
import type { AccessStateCache } from "./access-state";
import type { MfaService } from "./mfa";
import type { MfaRepo } from "./mfa-repo";
import type { Claims, LoginResult, Principal, SessionInfo, TokenPair } from "./model";
import type { AuthRepo, SessionRow } from "./repo";
import type { Sessions } from "./sessions";
import type { TokenService } from "./tokens";

export interface AuthDeps {
  config: Pick<Config, "PASSWORD_RESET_URL" | "REFRESH_GRACE_SECONDS">;
  repo: AuthRepo;
  users: UsersRepo;
  access: AccessStateCache;
  tokens: TokenService;
  passwords: PasswordHasher;
  mailer: Mailer;
  logger: Logger;
  audit: AuditLog;
  sessions: Sessions;
  mfa: MfaService;
  mfaRepo: MfaRepo;
}

const invalidToken = (message: string) => errors.unauthenticated("INVALID_TOKEN", message);

export function bearerToken(authorization: string | undefined): string | undefined {
  const match = authorization?.match(/^Bearer\s+(\S+)\s*$/i);
  return match?.[1];
}

/** Ties a reset link or an mfa_token to the current password: a later change gives another fingerprint. */
async function passwordFingerprint(passwordHash: string): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(passwordHash)));
  return Buffer.from(digest.subarray(0, 12)).toString("base64url");
}

/** Thrown inside a transaction to roll it back; answered after the rollback. */
class Refused extends Error {}

export function createAuthService(deps: AuthDeps) {
  const { repo, users, access, tokens, passwords, mailer, logger, audit, sessions, mfa, mfaRepo } = deps;
  const graceMs = deps.config.REFRESH_GRACE_SECONDS * 1000;

  /** A second refresh with the token just rotated, within the grace window: a racing tab, not a thief. */
  const isGraceRace = (session: SessionRow, jti: string) =>
    session.previousJti === jti &&
    session.accessJti !== null &&
    session.rotatedAt !== null &&
    Date.now() - session.rotatedAt.getTime() < graceMs;

  const userEvent = (userId: string, meta: RequestMeta) => ({
    actorId: userId,
    target: { type: "user" as const, id: userId },
    meta,
  });

  return {
    /**
     * The login rate-limit key: the account's id when the identifier names one, so its username and
     * email share one bucket; the identifier itself otherwise.
     */
    async loginBucket(identifier: string): Promise<string> {
      return (await users.findByLogin(identifier))?.id ?? identifier;
    },

    /**
     * One answer for an unknown user, a wrong password and a deactivated account, in the same time. With
     * TOTP enabled the answer is an `mfa_token` for `/auth/login/mfa` instead of tokens.
     */
    async login(identifier: string, password: string, meta: RequestMeta): Promise<LoginResult> {
      const row = await users.findByLogin(identifier);
      const valid = row ? await passwords.verify(password, row.passwordHash) : await passwords.burn(password);
      if (!row || !valid || !row.isActive) {
        const reason = !row ? "unknown_user" : !valid ? "wrong_password" : "inactive";
        // The identifier is kept only when it names an account: a password typed into the wrong field must not be stored.
        await audit.recordAlone({
          action: "login.failed",
          actorId: null,
          target: row && { type: "user", id: row.id },
          details: { method: "password", reason },
          meta,
        });
        throw errors.invalidCredentials();
      }
      let passwordHash = row.passwordHash;
      if (passwords.needsRehash(passwordHash)) {
        // A hash of another cost would verify in another time than the rest: bring it to BCRYPT_ROUNDS.
        const rehashed = await passwords.hash(password);
        await users.setPasswordHash(row.id, passwordHash, rehashed);
        passwordHash = rehashed;
      }
      const subject = toPublicUser(row);
      if (await mfa.isEnabled(row.id)) {
        const mfaToken = await tokens.mfaToken(subject, await passwordFingerprint(passwordHash));
        return { mfa_required: true, mfa_token: mfaToken, methods: ["totp"] };
      }
      const session = await audit.transaction((tx) => sessions.start(tx, subject, "password", meta));
      return sessions.pairOf(subject, session);
    },

    /**
     * The second login step: an `mfa_token` (5 minutes, once, void once the password changes) and a TOTP
     * or recovery code. Guesses are counted per account and audited; the token is spent, the code
     * accepted and the session started in one transaction, so a wrong code leaves the token usable for
     * another try.
     */
    async loginWithCode(mfaToken: string, code: string, meta: RequestMeta): Promise<TokenPair> {
      const claims = await tokens.verify(mfaToken, "mfa");
      const proof = await mfa.prepare(claims.sub, code);
      const row = await users.findById(claims.sub);
      if (!row?.isActive || proof === "not-enabled" || (await passwordFingerprint(row.passwordHash)) !== claims.pwh) {
        throw invalidToken("Log in again");
      }
      const subject = toPublicUser(row);
      try {
        const session = await audit.transaction(async (tx) => {
          const token = { jti: claims.jti, userId: claims.sub, expiresAt: new Date(claims.exp * 1000) };
          if (!(await mfaRepo.spendMfaToken(tx, token)))
            throw invalidToken("This mfa_token was used already; log in again");
          if (!proof || !(await mfa.spend(tx, claims.sub, proof))) throw new Refused();
          return sessions.start(tx, subject, proof.kind, meta);
        });
        await mfa.succeeded(claims.sub);
        return await sessions.pairOf(subject, session);
      } catch (error) {
        if (!(error instanceof Refused)) throw error;
        await mfa.failed(claims.sub, "login", meta);
        throw errors.invalidCredentials("The code is wrong, expired or already used");
      }
    },

    /**
     * Rotates the refresh token. Presenting the token just replaced within REFRESH_GRACE_SECONDS gives
     * the same new pair (two tabs refreshing at once); any other already-rotated token ends the session.
     */
    async refresh(refreshToken: string, meta: RequestMeta): Promise<TokenPair> {
      const claims = await tokens.verify(refreshToken, "refresh");
      const sid = claims.sid as string;
      const session = await repo.findSession(sid);
      if (!session || session.revokedAt || session.expiresAt.getTime() <= Date.now()) {
        throw invalidToken("Session has ended; log in again");
      }
      const row = await users.findById(claims.sub);
      if (!row?.isActive) throw invalidToken("User is inactive or no longer exists");
      const subject = toPublicUser(row);
      let current = session;
      if (session.refreshJti === claims.jti) {
        const next = { refreshJti: crypto.randomUUID(), accessJti: crypto.randomUUID() };
        const rotated = await repo.rotateRefresh(sid, claims.jti, next);
        if (rotated) return sessions.pairOf(subject, rotated);
        // Lost the race to a concurrent refresh with the same token: read the pair it issued.
        current = (await repo.findSession(sid)) ?? session;
      }
      if (!current.revokedAt && isGraceRace(current, claims.jti)) return sessions.pairOf(subject, current);
      await access.revoke({ userId: claims.sub, sessions: [sid] }, async (tx, revoked) => {
        if (revoked.length === 0) return;
        await audit.record(tx, {
          action: "refresh.reuse_detected",
          actorId: null,
          target: { type: "session", id: sid },
          details: { user_id: claims.sub },
          meta,
        });
      });
      logger.warn("refresh token reuse detected; session revoked", { user_id: claims.sub, session_id: sid });
      throw invalidToken("Refresh token already used; session revoked");
    },

    /** Revokes the access token and its session; an optional refresh token's session (same user) ends too. */
    async logout(principal: Principal, refreshToken: string | undefined, meta: RequestMeta): Promise<void> {
      const ended = new Set([principal.claims.sid]);
      if (refreshToken) {
        const refresh = await tokens.verify(refreshToken, "refresh").catch(() => undefined);
        if (refresh?.sub === principal.user.id) ended.add(refresh.sid as string);
      }
      await access.revoke({ userId: principal.user.id, token: principal.claims, sessions: [...ended] }, (tx, revoked) =>
        audit.record(tx, { action: "logout", ...userEvent(principal.user.id, meta), details: { sessions: revoked } }),
      );
    },

    /** Every session of the user, this one too. */
    async logoutAll(principal: Principal, meta: RequestMeta): Promise<void> {
      await access.revoke({ userId: principal.user.id, token: principal.claims, sessions: "all" }, (tx, revoked) =>
        audit.record(tx, {
          action: "logout",
          ...userEvent(principal.user.id, meta),
          details: { scope: "all", sessions: revoked },
        }),
      );
    },

    /** The user's live sessions, newest first; `current` marks the caller's. */
    async listSessions(principal: Principal): Promise<{ items: SessionInfo[] }> {
      const rows = await repo.liveSessions(principal.user.id);
      return {
        items: rows.map((row) => ({
          id: row.id,
          created_at: row.createdAt.toISOString(),
          last_used_at: (row.lastUsedAt ?? row.createdAt).toISOString(),
          user_agent: row.userAgent,
          ip: row.ip,
          current: row.id === principal.claims.sid,
        })),
      };
    },

    /** Ends one of the user's own sessions: its tokens and sockets stop at once. Anyone else's is a 404. */
    async revokeSession(principal: Principal, sessionId: string, meta: RequestMeta): Promise<void> {
      const revoked = await access.revoke({ userId: principal.user.id, sessions: [sessionId] }, async (tx, ids) => {
        if (ids.length === 0) return;
        await audit.record(tx, {
          action: "session.revoked",
          actorId: principal.user.id,
          target: { type: "session", id: sessionId },
          details: { user_id: principal.user.id },
          meta,
        });
      });
      if (revoked.length === 0) throw errors.notFound("Session");
    },

    /** The per-request check behind every guarded route: the token, its revocation and the current user. */
    async authenticate(authorization: string | undefined): Promise<Principal> {
      const token = bearerToken(authorization);
      if (!token) throw errors.unauthenticated("AUTHENTICATION_REQUIRED", "Not authenticated");
      const claims = await tokens.verify(token, "access");
      const { user, revoked } = await access.lookup(claims);
      if (revoked) throw invalidToken("Token has been revoked");
      if (!user?.is_active) throw invalidToken("User is inactive or no longer exists");
      return { user, claims: claims as Principal["claims"] };
    },

    /** For an open socket: does its token still stand for an active user and a live session (expiry aside)? */
    async stillAllowed(claims: Claims): Promise<boolean> {
      const { user, revoked } = await access.lookup(claims);
      return !revoked && user?.is_active === true;
    },

    /** Always succeeds for the caller; a mail goes out only when an active account has this email. */
    async requestPasswordReset(email: string): Promise<void> {
      const row = await users.findByEmail(email);
      if (!row?.isActive) return;
      const fingerprint = await passwordFingerprint(row.passwordHash);
      const token = await tokens.resetToken(toPublicUser(row), crypto.randomUUID(), fingerprint);
      const link = linkWithToken(deps.config.PASSWORD_RESET_URL, token);
      const minutes = tokens.lifetimes.reset / 60;
      // Not awaited: the response must not reveal, by its timing, that a mail was sent.
      sendInBackground(
        mailer,
        logger,
        {
          to: row.email,
          subject: "Reset your ReViewPoint password",
          text: `Someone asked to reset the password of ${row.username}.\n\nTo choose a new one, open:\n${link}\n\nThe link works once and expires in ${minutes} minutes. If it was not you, ignore this mail.`,
        },
        row.id,
      );
    },

    /** Works once, and only while the password is the one the link was issued against. */
    async resetPassword(token: string, newPassword: string, meta: RequestMeta): Promise<void> {
      const claims = await tokens.verify(token, "reset").catch(() => {
        throw errors.badRequest("Invalid or expired reset token");
      });
      const user = await users.findById(claims.sub);
      if (!user?.isActive || (await passwordFingerprint(user.passwordHash)) !== claims.pwh) {
        throw errors.badRequest("Invalid or expired reset token");
      }
      const hash = await passwords.hash(newPassword);
      const spent = await repo.spendResetToken(
        { jti: claims.jti, userId: claims.sub, expiresAt: new Date(claims.exp * 1000) },
        user.passwordHash,
        hash,
        (tx) => audit.record(tx, { action: "password.reset", ...userEvent(claims.sub, meta) }),
      );
      if (!spent) throw errors.badRequest("Reset token has already been used");
      await access.userChanged(claims.sub);
      await access.revokeUserSessions(claims.sub);
    },
  };
}

export type AuthService = ReturnType<typeof createAuthService>;
