import type { Config } from "../../config";
import type { Principal } from "../../http/auth";
import { errors } from "../../http/errors";
import type { KeyValueStore } from "../../platform/kv";
import type { Logger } from "../../platform/logger";
import type { Mailer } from "../../platform/mail";
import type { PasswordHasher } from "../../platform/passwords";
import type { UserCache } from "../users/cache";
import { userCacheKey } from "../users/cache";
import { type PublicUser, toPublicUser } from "../users/model";
import type { UsersRepo } from "../users/repo";
import type { AuthRepo } from "./repo";
import type { Revocation } from "./revocation";
import type { TokenPair, TokenService } from "./tokens";

export interface AuthDeps {
  config: Pick<Config, "PASSWORD_RESET_URL">;
  kv: KeyValueStore;
  repo: AuthRepo;
  users: UsersRepo;
  userCache: UserCache;
  tokens: TokenService;
  revocation: Revocation;
  passwords: PasswordHasher;
  mailer: Mailer;
  logger: Logger;
}

const invalidToken = (message: string) => errors.unauthenticated("INVALID_TOKEN", message);

export function bearerToken(authorization: string | undefined): string | undefined {
  const match = authorization?.match(/^Bearer\s+(\S+)\s*$/i);
  return match?.[1];
}

export function createAuthService(deps: AuthDeps) {
  const { kv, repo, users, userCache, tokens, revocation, passwords, mailer, logger } = deps;

  async function startSession(user: PublicUser): Promise<TokenPair> {
    const refreshJti = crypto.randomUUID();
    const session = await repo.createSession({
      userId: user.id,
      refreshJti,
      expiresAt: new Date(Date.now() + tokens.lifetimes.refresh * 1000),
    });
    return tokens.pair(user, session.id, refreshJti);
  }

  return {
    /** One answer for an unknown user, a wrong password and a deactivated account, in the same time. */
    async login(identifier: string, password: string): Promise<TokenPair> {
      const row = await users.findByLogin(identifier);
      const valid = row ? await passwords.verify(password, row.passwordHash) : await passwords.burn(password);
      if (!row || !valid || !row.isActive) throw errors.invalidCredentials();
      return startSession(toPublicUser(row));
    },

    /** Rotates the refresh token; presenting an already-rotated one ends the whole session. */
    async refresh(refreshToken: string): Promise<TokenPair> {
      const claims = await tokens.verify(refreshToken, "refresh");
      const sid = claims.sid as string;
      const session = await repo.findSession(sid);
      if (!session || session.revokedAt || session.expiresAt.getTime() <= Date.now()) {
        throw invalidToken("Session has ended; log in again");
      }
      const nextJti = crypto.randomUUID();
      if (session.refreshJti !== claims.jti || !(await repo.rotateRefresh(sid, claims.jti, nextJti))) {
        await revocation.revokeSessions([sid]);
        logger.warn("refresh token reuse detected; session revoked", { user_id: claims.sub, session_id: sid });
        throw invalidToken("Refresh token already used; session revoked");
      }
      const row = await users.findById(claims.sub);
      if (!row?.isActive) throw invalidToken("User is inactive or no longer exists");
      return tokens.pair(toPublicUser(row), sid, nextJti);
    },

    /** Revokes the access token and its session; an optional refresh token's session (same user) ends too. */
    async logout(principal: Principal, refreshToken?: string): Promise<void> {
      const sessions = new Set([principal.claims.sid as string]);
      if (refreshToken) {
        const refresh = await tokens.verify(refreshToken, "refresh").catch(() => undefined);
        if (refresh?.sub === principal.user.id) sessions.add(refresh.sid as string);
      }
      await revocation.revokeToken(principal.claims);
      await revocation.revokeSessions([...sessions]);
    },

    /**
     * The per-request check behind every guarded route: token, revocation and the user, with the
     * store answering in one round trip; the database answers when the store cannot.
     */
    async authenticate(authorization: string | undefined): Promise<Principal> {
      const token = bearerToken(authorization);
      if (!token) throw errors.unauthenticated("AUTHENTICATION_REQUIRED", "Not authenticated");
      const claims = await tokens.verify(token, "access");
      const revocationKeys = revocation.keys(claims);
      const cached = await kv.getMany([userCacheKey(claims.sub), ...revocationKeys]).catch(() => undefined);
      const state = cached ? revocation.interpret(cached.slice(1)) : "unknown";
      const revoked = state === "unknown" ? await revocation.checkDurably(claims) : state === "revoked";
      if (revoked) throw invalidToken("Token has been revoked");

      let user = userCache.parse(cached?.[0]);
      if (!user) {
        const row = await users.findById(claims.sub);
        user = row && toPublicUser(row);
        if (user && cached) await userCache.put(user);
      }
      if (!user?.is_active) throw invalidToken("User is inactive or no longer exists");
      return { user, claims };
    },

    /** Always succeeds for the caller; a mail goes out only when an active account has this email. */
    async requestPasswordReset(email: string): Promise<void> {
      const row = await users.findByEmail(email);
      if (!row?.isActive) return;
      const token = await tokens.resetToken(toPublicUser(row), crypto.randomUUID());
      const link = `${deps.config.PASSWORD_RESET_URL}?token=${encodeURIComponent(token)}`;
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

    async resetPassword(token: string, newPassword: string): Promise<void> {
      const claims = await tokens.verify(token, "reset").catch(() => {
        throw errors.badRequest("Invalid or expired reset token");
      });
      const user = await users.findById(claims.sub);
      if (!user?.isActive) throw errors.badRequest("Invalid or expired reset token");
      const hash = await passwords.hash(newPassword);
      const spent = await repo.spendResetToken(
        { jti: claims.jti, userId: claims.sub, expiresAt: new Date(claims.exp * 1000) },
        hash,
      );
      if (!spent) throw errors.badRequest("Reset token has already been used");
      await userCache.invalidate(claims.sub);
      await revocation.revokeUserSessions(claims.sub);
    },
  };
}

export type AuthService = ReturnType<typeof createAuthService>;
