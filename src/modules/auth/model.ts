import { t } from "elysia";
import type { Role } from "../../db/schema";
import { SingleLine } from "../../http/text";
import { Email, GivenPassword, Password, type PublicUser } from "../users/model";

export const Tokens = t.Object(
  {
    access_token: t.String(),
    refresh_token: t.String(),
    token_type: t.Literal("bearer"),
    expires_in: t.Integer({ description: "Seconds until the access token expires" }),
  },
  { title: "Tokens", description: "A new access/refresh token pair" },
);
export type TokenPair = typeof Tokens.static;

export const Message = t.Object({ message: t.String() }, { title: "Message" });

/** JSON with username or email, or the OAuth2 password form the docs' Authorize button posts. */
export const LoginBody = t.Object({
  username: t.Optional(SingleLine({ maxLength: 320, description: "Username or email" })),
  email: t.Optional(SingleLine({ maxLength: 320 })),
  password: GivenPassword,
  grant_type: t.Optional(SingleLine({ maxLength: 64 })),
  scope: t.Optional(SingleLine({ maxLength: 1024 })),
  client_id: t.Optional(SingleLine({ maxLength: 256 })),
  client_secret: t.Optional(SingleLine({ maxLength: 256 })),
});
export type LoginBody = typeof LoginBody.static;

export const RefreshBody = t.Optional(t.Object({ refresh_token: t.Optional(SingleLine({ maxLength: 4096 })) }));
export const ResetRequestBody = t.Object({ email: Email });
export const ResetBody = t.Object({ token: SingleLine({ maxLength: 4096 }), new_password: Password });

export type TokenType = "access" | "refresh" | "reset";

export interface Claims {
  sub: string;
  username: string;
  role: Role;
  type: TokenType;
  jti: string;
  /** The login session the token belongs to (access and refresh tokens). */
  sid?: string;
  /** Reset tokens: a fingerprint of the password hash they were issued against. */
  pwh?: string;
  iat: number;
  exp: number;
}

/** Who a guarded request acts as. */
export interface Principal {
  user: PublicUser;
  claims: Claims & { sid: string };
}

/** The identifier a login names (username or email), as the limits and the lookup see it. */
export const loginIdentifier = (body: Pick<LoginBody, "username" | "email">) =>
  (body.username ?? body.email)?.trim().toLowerCase() || undefined;
