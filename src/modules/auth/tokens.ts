import { errors as joseErrors, jwtVerify, SignJWT } from "jose";
import type { Config } from "../../config";
import type { Role } from "../../db/schema";
import { errors } from "../../http/errors";
import { isUuid } from "../../http/formats";
import type { Claims, TokenPair, TokenType } from "./model";

export interface Subject {
  id: string;
  username: string;
  role: Role;
}

/** One issued pair, named by what makes it reproducible: signing the same claims gives the same tokens. */
export interface PairIds {
  sid: string;
  accessJti: string;
  refreshJti: string;
  /** Seconds since the epoch. */
  issuedAt: number;
}

const VERIFIED_CACHE_SIZE = 10_000;
/** The second login step must follow the first within this. */
export const MFA_TOKEN_SECONDS = 300;

export function createTokenService(
  config: Pick<
    Config,
    | "secretKey"
    | "ALGORITHM"
    | "ACCESS_TOKEN_EXPIRE_MINUTES"
    | "REFRESH_TOKEN_EXPIRE_DAYS"
    | "PASSWORD_RESET_EXPIRE_MINUTES"
  >,
) {
  // Imported once: handing jose raw bytes would import the key again on every sign and verify.
  let cryptoKey: Promise<CryptoKey> | undefined;
  const key = () =>
    (cryptoKey ??= crypto.subtle.importKey(
      "raw",
      new TextEncoder().encode(config.secretKey),
      { name: "HMAC", hash: `SHA-${config.ALGORITHM.slice(2)}` },
      false,
      ["sign", "verify"],
    ));
  const lifetimes: Record<TokenType, number> = {
    access: config.ACCESS_TOKEN_EXPIRE_MINUTES * 60,
    refresh: config.REFRESH_TOKEN_EXPIRE_DAYS * 86_400,
    reset: config.PASSWORD_RESET_EXPIRE_MINUTES * 60,
    mfa: MFA_TOKEN_SECONDS,
  };

  async function sign(
    subject: Subject,
    type: TokenType,
    jti: string,
    extra: { sid?: string; pwh?: string },
    issuedAt = Math.floor(Date.now() / 1000),
  ): Promise<string> {
    return new SignJWT({ username: subject.username, role: subject.role, type, ...extra })
      .setProtectedHeader({ alg: config.ALGORITHM, typ: "JWT" })
      .setSubject(subject.id)
      .setJti(jti)
      .setIssuedAt(issuedAt)
      .setExpirationTime(issuedAt + lifetimes[type])
      .sign(await key());
  }

  // A token's signature check gives the same answer every time: remember recent ones (revocation is
  // checked separately on every request; expiry is re-checked on every hit).
  const verified = new Map<string, Claims>();

  return {
    lifetimes,

    /** HMAC is deterministic: the same subject and ids give byte-identical tokens (the refresh grace window). */
    async pair(subject: Subject, ids: PairIds): Promise<TokenPair> {
      const [access, refresh] = await Promise.all([
        sign(subject, "access", ids.accessJti, { sid: ids.sid }, ids.issuedAt),
        sign(subject, "refresh", ids.refreshJti, { sid: ids.sid }, ids.issuedAt),
      ]);
      return { access_token: access, refresh_token: refresh, token_type: "bearer", expires_in: lifetimes.access };
    },

    /** `fingerprint` ties the token to the password it may replace: any later change voids it. */
    resetToken: (subject: Subject, jti: string, fingerprint: string) =>
      sign(subject, "reset", jti, { pwh: fingerprint }),

    /**
     * Proof that the password step of a login passed; only `/auth/login/mfa` takes it, once, and only
     * while the password is the one it was issued against (`fingerprint`).
     */
    mfaToken: (subject: Subject, fingerprint: string) =>
      sign(subject, "mfa", crypto.randomUUID(), { pwh: fingerprint }),

    /** Verifies signature, algorithm (only the configured one: never `none`), expiry, `type` and the ids' shape. */
    async verify(token: string, type: TokenType): Promise<Claims> {
      const known = verified.get(token);
      if (known && known.type === type && known.exp * 1000 > Date.now()) return known;
      let payload: Record<string, unknown>;
      try {
        ({ payload } = await jwtVerify(token, await key(), { algorithms: [config.ALGORITHM] }));
      } catch (error) {
        if (error instanceof joseErrors.JWTExpired) throw errors.unauthenticated("TOKEN_EXPIRED", "Token has expired");
        throw errors.unauthenticated("INVALID_TOKEN", "Invalid token");
      }
      const uuid = (value: unknown) => typeof value === "string" && isUuid(value);
      const wellFormed =
        payload.type === type &&
        uuid(payload.sub) &&
        uuid(payload.jti) &&
        typeof payload.exp === "number" &&
        (type === "reset" || type === "mfa" ? typeof payload.pwh === "string" : uuid(payload.sid));
      if (!wellFormed) throw errors.unauthenticated("INVALID_TOKEN", `Not a valid ${type} token`);
      const claims = payload as unknown as Claims;
      if (verified.size >= VERIFIED_CACHE_SIZE) verified.delete(verified.keys().next().value as string);
      verified.set(token, claims);
      return claims;
    },
  };
}

export type TokenService = ReturnType<typeof createTokenService>;
