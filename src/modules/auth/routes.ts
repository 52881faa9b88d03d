import { Elysia, t } from "elysia";
import { type AuthGuard, requireAuth, secured } from "../../http/auth";
import { errorResponses, errors } from "../../http/errors";
import { type LimitSpec, perIp, perUser, type RateLimits } from "../../http/rate-limit";
import type { MetaReader } from "../../http/request-meta";
import { noStore } from "../../http/security-headers";
import { IdParams, RegisterBody, User } from "../users/model";
import type { UsersService } from "../users/service";
import type { EmailVerification } from "./email-verification";
import {
  LoginBody,
  LoginResponse,
  loginIdentifier,
  Message,
  MfaLoginBody,
  type Principal,
  RefreshBody,
  ResetBody,
  ResetRequestBody,
  SessionList,
  Tokens,
  VerifyEmailBody,
} from "./model";
import { type AuthService, bearerToken } from "./service";

export function authRoutes(deps: {
  auth: AuthService;
  users: UsersService;
  verification: EmailVerification;
  guard: AuthGuard<Principal>;
  limits: RateLimits["perRoute"];
  meta: MetaReader;
}) {
  const { auth, users, verification, guard, limits, meta } = deps;
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
      async (context) => {
        const user = await users.create(context.body, { actorId: null, meta: meta(context) });
        context.set.status = 201;
        return user;
      },
      {
        body: RegisterBody,
        rateLimit: { rule: "register", key: perIp },
        response: {
          201: t.Composite([User], { description: "The new account; a verification link is mailed to its address" }),
          ...errorResponses(409, 422, 429),
        },
        detail: { operationId: "auth_register", summary: "Create an account" },
      },
    )
    .post(
      "/login",
      (context) => {
        const identifier = loginIdentifier(context.body);
        if (!identifier) throw errors.validation([{ field: "username", issue: "Username or email is required" }]);
        noStore(context.set);
        return auth.login(identifier, context.body.password, meta(context));
      },
      {
        body: LoginBody,
        rateLimit: [
          { rule: "loginIp", key: perIp },
          { rule: "login", key: perAccount },
        ],
        response: { 200: LoginResponse, ...errorResponses(401, 422, 429) },
        detail: {
          operationId: "auth_login",
          summary: "Log in",
          description:
            "JSON `{username, password}` (username may be the email) or `{email, password}`, or the OAuth2 password form (`application/x-www-form-urlencoded`). The username and the email of one account share one rate-limit bucket. With TOTP enabled the answer is `{mfa_required: true, mfa_token, methods}`: finish at `POST /auth/login/mfa`.",
        },
      },
    )
    .post(
      "/login/mfa",
      (context) => {
        noStore(context.set);
        return auth.loginWithCode(context.body.mfa_token, context.body.code, meta(context));
      },
      {
        body: MfaLoginBody,
        rateLimit: { rule: "loginIp", key: perIp },
        response: { 200: Tokens, ...errorResponses(401, 422, 429) },
        detail: {
          operationId: "auth_login_mfa",
          summary: "Finish a login with a TOTP or recovery code",
          description:
            "`mfa_token` from `POST /auth/login` (5 minutes; spent by the login it completes) and a 6-digit TOTP code or a recovery code. Each code works once; guesses are limited per account (`RATE_LIMIT_MFA`, and `RATE_LIMIT_MFA_FAILURES` until a right code) and audited.",
        },
      },
    )
    .post(
      "/refresh",
      (context) => {
        const { body, request } = context;
        const token = body?.refresh_token ?? bearerToken(request.headers.get("authorization") ?? undefined);
        if (!token) throw errors.unauthenticated("AUTHENTICATION_REQUIRED", "Refresh token required");
        noStore(context.set);
        return auth.refresh(token, meta(context));
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
      async (context) => {
        await auth.logout(context.principal, context.body?.refresh_token, meta(context));
        context.set.status = 204;
      },
      {
        auth: requireAuth,
        body: RefreshBody,
        response: { 204: t.Void({ description: "Logged out" }), ...errorResponses(401, 422) },
        detail: secured("auth_logout", "Revoke the access token and its session"),
      },
    )
    .post(
      "/logout-all",
      async (context) => {
        await auth.logoutAll(context.principal, meta(context));
        context.set.status = 204;
      },
      {
        auth: requireAuth,
        response: { 204: t.Void({ description: "Every session ended" }), ...errorResponses(401) },
        detail: secured(
          "auth_logout_all",
          "End every session of the account",
          "This one too: every access and refresh token of the account stops at once, and its sockets close (4401) on every instance.",
        ),
      },
    )
    .get("/sessions", ({ principal }) => auth.listSessions(principal), {
      auth: requireAuth,
      response: { 200: SessionList, ...errorResponses(401) },
      detail: secured("auth_list_sessions", "My sessions", "One per login; `last_used_at` moves at each refresh."),
    })
    .delete(
      "/sessions/:id",
      async (context) => {
        await auth.revokeSession(context.principal, context.params.id, meta(context));
        context.set.status = 204;
      },
      {
        auth: requireAuth,
        params: IdParams,
        response: { 204: t.Void({ description: "Session ended" }), ...errorResponses(401, 404, 422) },
        detail: secured(
          "auth_revoke_session",
          "End one of my sessions",
          "Its tokens stop at once and its sockets close, on every instance. Another user's session, or one already ended, is a 404.",
        ),
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
      async (context) => {
        await auth.resetPassword(context.body.token, context.body.new_password, meta(context));
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
    .post("/verify-email", (context) => verification.verify(context.body.token, meta(context)), {
      body: VerifyEmailBody,
      response: {
        200: t.Composite([User], { description: "The user, `email_verified: true`" }),
        ...errorResponses(400, 422),
      },
      detail: {
        operationId: "auth_verify_email",
        summary: "Verify an email address with the mailed token",
        description:
          "The token from the link mailed at registration, at an email change or on request. It works once, for the address it was sent to, until it expires (`EMAIL_VERIFY_EXPIRE_HOURS`); otherwise 400.",
      },
    })
    .post(
      "/request-verification",
      async ({ principal, set }) => {
        await verification.resend(principal.user);
        set.status = 202;
        return { message: "A verification link has been sent." };
      },
      {
        auth: requireAuth,
        rateLimit: { rule: "emailVerification", key: perUser },
        response: {
          202: t.Composite([Message], { description: "A new link is on its way" }),
          ...errorResponses(401, 409, 429),
        },
        detail: secured(
          "auth_request_verification",
          "Mail me a new verification link",
          "Limited per account (`RATE_LIMIT_EMAIL_VERIFY`). 409 when the address is verified already.",
        ),
      },
    )
    .get("/me", ({ principal }) => principal.user, {
      auth: requireAuth,
      response: { 200: User, ...errorResponses(401) },
      detail: secured("auth_me", "The current user"),
    });
}
