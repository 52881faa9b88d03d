import { Elysia, t } from "elysia";
import { type AuthGuard, BEARER_SECURITY, requireAuth } from "../../http/auth";
import { errorResponses, errors } from "../../http/errors";
import { type LimitSpec, perIp, type RateLimits } from "../../http/rate-limit";
import { RegisterBody, User } from "../users/model";
import type { UsersService } from "../users/service";
import {
  LoginBody,
  loginIdentifier,
  Message,
  type Principal,
  RefreshBody,
  ResetBody,
  ResetRequestBody,
  Tokens,
} from "./model";
import { type AuthService, bearerToken } from "./service";

export function authRoutes(deps: {
  auth: AuthService;
  users: UsersService;
  guard: AuthGuard<Principal>;
  limits: RateLimits["perRoute"];
}) {
  const { auth, users, guard, limits } = deps;
  // Declared apart from the routes: an inline function in the options would blind Elysia's type inference.
  const perAccount: LimitSpec["key"] = ({ body }) => {
    const identifier = loginIdentifier(body as LoginBody);
    return identifier && auth.loginBucket(identifier);
  };
  const perEmail: LimitSpec["key"] = ({ body }) => (body as typeof ResetRequestBody.static).email.toLowerCase();
  return new Elysia({ prefix: "/auth", detail: { tags: ["auth"] } })
    .use(guard)
    .use(limits)
    .post(
      "/register",
      async ({ body, set }) => {
        const user = await users.create(body);
        set.status = 201;
        return user;
      },
      {
        body: RegisterBody,
        rateLimit: { rule: "register", key: perIp },
        response: {
          201: t.Composite([User], { description: "The new account" }),
          ...errorResponses(409, 422, 429),
        },
        detail: { operationId: "auth_register", summary: "Create an account" },
      },
    )
    .post(
      "/login",
      ({ body }) => {
        const identifier = loginIdentifier(body);
        if (!identifier) throw errors.validation([{ field: "username", issue: "Username or email is required" }]);
        return auth.login(identifier, body.password);
      },
      {
        body: LoginBody,
        rateLimit: [
          { rule: "loginIp", key: perIp },
          { rule: "login", key: perAccount },
        ],
        response: { 200: Tokens, ...errorResponses(401, 422, 429) },
        detail: {
          operationId: "auth_login",
          summary: "Log in",
          description:
            "JSON `{username, password}` (username may be the email) or `{email, password}`, or the OAuth2 password form (`application/x-www-form-urlencoded`). The username and the email of one account share one rate-limit bucket.",
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
          operationId: "auth_refresh",
          summary: "Exchange a refresh token for a new pair",
          description:
            "The refresh token comes as `Authorization: Bearer` or `{refresh_token}`. The old one stops working: presenting it again within `REFRESH_GRACE_SECONDS` (5 s by default; two tabs refreshing at once) returns the same new pair, and after that ends the session.",
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
        response: { 204: t.Void({ description: "Logged out" }), ...errorResponses(401, 422) },
        detail: {
          operationId: "auth_logout",
          summary: "Revoke the access token and its session",
          security: BEARER_SECURITY,
        },
      },
    )
    .post(
      "/request-password-reset",
      async ({ body, set }) => {
        await auth.requestPasswordReset(body.email);
        set.status = 202;
        return { message: "If an account with that email exists, a reset link has been sent." };
      },
      {
        body: ResetRequestBody,
        rateLimit: { rule: "passwordReset", key: perEmail },
        response: {
          202: t.Composite([Message], { description: "Accepted, whether or not the email exists" }),
          ...errorResponses(422, 429),
        },
        detail: { operationId: "auth_request_password_reset", summary: "Email a password-reset link" },
      },
    )
    .post(
      "/reset-password",
      async ({ body }) => {
        await auth.resetPassword(body.token, body.new_password);
        return { message: "Password has been reset. Log in with the new password." };
      },
      {
        body: ResetBody,
        response: {
          200: t.Composite([Message], { description: "Password changed" }),
          ...errorResponses(400, 422),
        },
        detail: { operationId: "auth_reset_password", summary: "Set a new password with a reset token" },
      },
    )
    .get("/me", ({ principal }) => principal.user, {
      auth: requireAuth,
      response: { 200: User, ...errorResponses(401) },
      detail: { operationId: "auth_me", summary: "The current user", security: BEARER_SECURITY },
    });
}
