import type { Config } from "../../config";
import { errors } from "../../http/errors";
import type { Logger } from "../../platform/logger";
import type { Mailer } from "../../platform/mail";
import type { PasswordHasher } from "../../platform/passwords";
import { toPublicUser } from "../users/model";
import type { UsersRepo } from "../users/repo";
import type { AccessStateCache } from "./access-state";
import type { Claims, Principal, TokenPair } from "./model";
import type { AuthRepo, SessionRow } from "./repo";
import type { Subject, TokenService } from "./tokens";

export interface AuthDeps {
  config: Pick<Config, "PASSWORD_RESET_URL" | "REFRESH_GRACE_SECONDS">;
  repo: AuthRepo;
  users: UsersRepo;
  access: AccessStateCache;
  tokens: TokenService;
  passwords: PasswordHasher;
  mailer: Mailer;
  logger: Logger;
}

const invalidToken = (message: string) => errors.unauthenticated("INVALID_TOKEN", message);

export function bearerToken(authorization: string | undefined): string | undefined {
  const match = authorization?.match(/^Bearer\s+(\S+)\s*$/i);
  return match?.[1];
}

/** Ties a reset link to the password it replaces: a later change gives another fingerprint. */
async function passwordFingerprint(passwordHash: string): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(passwordHash)));
  return Buffer.from(digest.subarray(0, 12)).toString("base64url");
}

/** The link the mail carries: `{token}` is replaced if present, else a `token` query parameter is added. */
function resetLink(base: string, token: string): string {
  if (base.includes("{token}")) return base.replaceAll("{token}", encodeURIComponent(token));
  const url = new URL(base);
  url.searchParams.set("token", token);
  return url.toString();
}

export function createAuthService(deps: AuthDeps) {
  const { repo, users, access, tokens, passwords, mailer, logger } = deps;
  const graceMs = deps.config.REFRESH_GRACE_SECONDS * 1000;

  const pairOf = (subject: Subject, session: SessionRow) =>
    tokens.pair(subject, {
      sid: session.id,
      accessJti: session.accessJti as string,
      refreshJti: session.refreshJti,
      issuedAt: Math.floor((session.rotatedAt as Date).getTime() / 1000),
    });

  async function startSession(subject: Subject): Promise<TokenPair> {
    const session = await repo.createSession({
      userId: subject.id,
      refreshJti: crypto.randomUUID(),
      accessJti: crypto.randomUUID(),
      expiresAt: new Date(Date.now() + tokens.lifetimes.refresh * 1000),
    });
    return pairOf(subject, session);
  }

  /** A second refresh with the token just rotated, within the grace window: a racing tab, not a thief. */
  const isGraceRace = (session: SessionRow, jti: string) =>
    session.previousJti === jti &&
    session.accessJti !== null &&
    session.rotatedAt !== null &&
    Date.now() - session.rotatedAt.getTime() < graceMs;

  return {
    /**
     * The login rate-limit key: the account's id when the identifier names one, so its username and
     * email share one bucket; the identifier itself otherwise.
     */
    async loginBucket(identifier: string): Promise<string> {
      return (await users.findByLogin(identifier))?.id ?? identifier;
    },

    /** One answer for an unknown user, a wrong password and a deactivated account, in the same time. */
    async login(identifier: string, password: string): Promise<TokenPair> {
      const row = await users.findByLogin(identifier);
      const valid = row ? await passwords.verify(password, row.passwordHash) : await passwords.burn(password);
      if (!row || !valid || !row.isActive) throw errors.invalidCredentials();
      if (passwords.needsRehash(row.passwordHash)) {
        // A hash of another cost would verify in another time than the rest: bring it to BCRYPT_ROUNDS.
        await users.setPasswordHash(row.id, row.passwordHash, await passwords.hash(password));
      }
      return startSession(toPublicUser(row));
    },

    /**
     * Rotates the refresh token. Presenting the token just replaced within REFRESH_GRACE_SECONDS gives
     * the same new pair (two tabs refreshing at once); any other already-rotated token ends the session.
     */
    async refresh(refreshToken: string): Promise<TokenPair> {
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
        if (rotated) return pairOf(subject, rotated);
        // Lost the race to a concurrent refresh with the same token: read the pair it issued.
        current = (await repo.findSession(sid)) ?? session;
      }
      if (!current.revokedAt && isGraceRace(current, claims.jti)) return pairOf(subject, current);
      await access.revokeSessions(claims.sub, [sid]);
      logger.warn("refresh token reuse detected; session revoked", { user_id: claims.sub, session_id: sid });
      throw invalidToken("Refresh token already used; session revoked");
    },

    /** Revokes the access token and its session; an optional refresh token's session (same user) ends too. */
    async logout(principal: Principal, refreshToken?: string): Promise<void> {
      const sessions = new Set([principal.claims.sid]);
      if (refreshToken) {
        const refresh = await tokens.verify(refreshToken, "refresh").catch(() => undefined);
        if (refresh?.sub === principal.user.id) sessions.add(refresh.sid as string);
      }
      await access.revokeToken(principal.claims);
      await access.revokeSessions(principal.user.id, [...sessions]);
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
      const link = resetLink(deps.config.PASSWORD_RESET_URL, token);
      const minutes = tokens.lifetimes.reset / 60;
      // Not awaited: the response must not reveal, by its timing, that a mail was sent.
      mailer
        .send({
          to: row.email,
          subject: "Reset your ReViewPoint password",
          text: `Someone asked to reset the password of ${row.username}.\n\nTo choose a new one, open:\n${link}\n\nThe link works once and expires in ${minutes} minutes. If it was not you, ignore this mail.`,
        })
        .catch((error: Error) => logger.error("password reset mail failed", { user_id: row.id, error: error.message }));
    },

    /** Works once, and only while the password is the one the link was issued against. */
    async resetPassword(token: string, newPassword: string): Promise<void> {
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
      );
      if (!spent) throw errors.badRequest("Reset token has already been used");
      await access.userChanged(claims.sub);
      await access.revokeUserSessions(claims.sub);
    },
  };
}

export type AuthService = ReturnType<typeof createAuthService>;
