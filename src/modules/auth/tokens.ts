import { errors as joseErrors, jwtVerify, SignJWT } from "jose";
import type { Config } from "../../config";
import type { Role } from "../../db/schema";
import { errors } from "../../http/errors";

export type TokenType = "access" | "refresh" | "reset";

export interface Claims {
  sub: string;
  username: string;
  role: Role;
  type: TokenType;
  jti: string;
  /** The login session the token belongs to (absent on reset tokens). */
  sid?: string;
  iat: number;
  exp: number;
}

export interface TokenPair {
  access_token: string;
  refresh_token: string;
  token_type: "bearer";
  expires_in: number;
}

export interface Subject {
  id: string;
  username: string;
  role: Role;
}

const VERIFIED_CACHE_SIZE = 10_000;

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
  };

  async function sign(subject: Subject, type: TokenType, jti: string, sid?: string): Promise<string> {
    return new SignJWT({ username: subject.username, role: subject.role, type, ...(sid ? { sid } : {}) })
      .setProtectedHeader({ alg: config.ALGORITHM, typ: "JWT" })
      .setSubject(subject.id)
      .setJti(jti)
      .setIssuedAt()
      .setExpirationTime(`${lifetimes[type]}s`)
      .sign(await key());
  }

  // A token's signature check gives the same answer every time: remember recent ones (revocation is
  // checked separately on every request; expiry is re-checked on every hit).
  const verified = new Map<string, Claims>();

  return {
    lifetimes,

    async pair(subject: Subject, sid: string, refreshJti: string): Promise<TokenPair> {
      const [access, refresh] = await Promise.all([
        sign(subject, "access", crypto.randomUUID(), sid),
        sign(subject, "refresh", refreshJti, sid),
      ]);
      return { access_token: access, refresh_token: refresh, token_type: "bearer", expires_in: lifetimes.access };
    },

    resetToken: (subject: Subject, jti: string) => sign(subject, "reset", jti),

    /** Verifies signature, algorithm (only the configured one: never `none`), expiry and the token's `type`. */
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
      const wellFormed =
        payload.type === type &&
        typeof payload.sub === "string" &&
        typeof payload.jti === "string" &&
        typeof payload.exp === "number" &&
        (type === "reset" || typeof payload.sid === "string");
      if (!wellFormed) throw errors.unauthenticated("INVALID_TOKEN", `Not a valid ${type} token`);
      const claims = payload as unknown as Claims;
      if (verified.size >= VERIFIED_CACHE_SIZE) verified.delete(verified.keys().next().value as string);
      verified.set(token, claims);
      return claims;
    },
  };
}

export type TokenService = ReturnType<typeof createTokenService>;
