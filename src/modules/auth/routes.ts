import { Elysia, t } from "elysia";
import type { Config } from "../../config";
import { type AuthGuard, BEARER_SECURITY, requireAuth } from "../../http/auth";
import { errorResponses, errors } from "../../http/errors";
import type { RateLimits } from "../../http/rate-limit";
import { Email, Password, RegisterBody, User } from "../users/model";
import type { UsersService } from "../users/service";
import { type AuthService, bearerToken } from "./service";

const Tokens = t.Object(
  {
    access_token: t.String(),
    refresh_token: t.String(),
    token_type: t.Literal("bearer"),
    expires_in: t.Integer({ description: "Seconds until the access token expires" }),
  },
  { title: "Tokens" },
);
const Message = t.Object({ message: t.String() }, { title: "Message" });

// JSON with username or email, or the OAuth2 password form the docs' Authorize button posts.
const LoginBody = t.Object({
  username: t.Optional(t.String({ maxLength: 320, description: "Username or email" })),
  email: t.Optional(t.String({ maxLength: 320 })),
  password: t.String({ maxLength: 128 }),
  grant_type: t.Optional(t.String()),
  scope: t.Optional(t.String()),
  client_id: t.Optional(t.String()),
  client_secret: t.Optional(t.String()),
});
const RefreshBody = t.Optional(t.Object({ refresh_token: t.Optional(t.String()) }));

export function authRoutes(deps: {
  auth: AuthService;
  users: UsersService;
  guard: AuthGuard;
  limits: RateLimits;
  rules: Config["rateLimits"];
}) {
  const { auth, users, guard, limits, rules } = deps;
  return new Elysia({ prefix: "/auth", detail: { tags: ["auth"] } })
    .use(guard)
    .post(
      "/register",
      async ({ body, request, server, set }) => {
        await limits.enforce(set, "register", limits.ipOf(request, server), rules.register);
        const user = await users.create(body);
        set.status = 201;
        return user;
      },
      {
        body: RegisterBody,
        response: { 201: User, ...errorResponses(409, 422, 429) },
        detail: { summary: "Create an account" },
      },
    )
    .post(
      "/login",
      async ({ body, request, server, set }) => {
        const identifier = (body.username ?? body.email)?.trim().toLowerCase();
        if (!identifier) throw errors.validation([{ field: "username", issue: "Username or email is required" }]);
        await limits.enforce(set, "login-ip", limits.ipOf(request, server), rules.loginIp);
        await limits.enforce(set, "login", identifier, rules.login);
        return auth.login(identifier, body.password);
      },
      {
        body: LoginBody,
        response: { 200: Tokens, ...errorResponses(401, 422, 429) },
        detail: {
          summary: "Log in",
          description:
            "JSON `{username, password}` (username may be the email) or `{email, password}`, or the OAuth2 password form (`application/x-www-form-urlencoded`).",
        },
      },
    )
    .post(
      "/refresh",
      ({ body, request }) => {
        const token = body?.refresh_token ?? bearerToken(request.headers.get("authorization") ?? undefined);
        if (!token) throw errors.unauthenticated("AUTHENTICATION_REQUIRED", "Refresh token required");
        return auth.refresh(token);
      },
      {
        body: RefreshBody,
        response: { 200: Tokens, ...errorResponses(401, 422) },
        detail: {
          summary: "Exchange a refresh token for a new pair",
          description:
            "The refresh token comes as `Authorization: Bearer` or `{refresh_token}`. The old one stops working; replaying it ends the session.",
        },
      },
    )
    .post(
      "/logout",
      async ({ principal, body, set }) => {
        await auth.logout(principal, body?.refresh_token);
        set.status = 204;
      },
      {
        auth: requireAuth,
        body: RefreshBody,
        response: { 204: t.Void(), ...errorResponses(401, 422) },
        detail: { summary: "Revoke the access token and its session", security: BEARER_SECURITY },
      },
    )
    .post(
      "/request-password-reset",
      async ({ body, set }) => {
        await limits.enforce(set, "password-reset", body.email.toLowerCase(), rules.passwordReset);
        await auth.requestPasswordReset(body.email);
        set.status = 202;
        return { message: "If an account with that email exists, a reset link has been sent." };
      },
      {
        body: t.Object({ email: Email }),
        response: { 202: Message, ...errorResponses(422, 429) },
        detail: { summary: "Email a password-reset link" },
      },
    )
    .post(
      "/reset-password",
      async ({ body }) => {
        await auth.resetPassword(body.token, body.new_password);
        return { message: "Password has been reset. Log in with the new password." };
      },
      {
        body: t.Object({ token: t.String({ maxLength: 2048 }), new_password: Password }),
        response: { 200: Message, ...errorResponses(400, 422) },
        detail: { summary: "Set a new password with a reset token" },
      },
    )
    .get("/me", ({ principal }) => principal.user, {
      auth: requireAuth,
      response: { 200: User, ...errorResponses(401) },
      detail: { summary: "The current user", security: BEARER_SECURITY },
    });
}
