import { Elysia, t } from "elysia";
import { type AuthGuard, requireAuth, requirePermission, secured } from "../../http/auth";
import { errorResponses } from "../../http/errors";
import type { MetaReader } from "../../http/request-meta";
import { noStore } from "../../http/security-headers";
import { IdParams } from "../users/model";
import type { MfaService } from "./mfa";
import { type Principal, RecoveryCodes, TotpConfirmBody, TotpDisableBody, TotpEnrolBody, TotpEnrolment } from "./model";

export function mfaRoutes(deps: { mfa: MfaService; guard: AuthGuard<Principal>; meta: MetaReader }) {
  const { mfa, guard, meta } = deps;
  const totp = new Elysia({ prefix: "/auth/mfa/totp", detail: { tags: ["auth"] } })
    .use(guard)
    .post(
      "",
      ({ principal, body, set }) => {
        noStore(set);
        return mfa.enrol(principal.user, body.password);
      },
      {
        auth: requireAuth,
        body: TotpEnrolBody,
        response: { 200: TotpEnrolment, ...errorResponses(401, 409, 422, 429) },
        detail: secured(
          "auth_totp_enrol",
          "Start a TOTP enrolment",
          "Needs the password (attempts limited like a password change). Answers the secret and an otpauth:// URL, this once; TOTP is required at login only after `POST /auth/mfa/totp/confirm`. 409 when TOTP is enabled already.",
        ),
      },
    )
    .post(
      "/confirm",
      (context) => {
        noStore(context.set);
        return mfa.confirm(context.principal.user, context.body.code, meta(context));
      },
      {
        auth: requireAuth,
        body: TotpConfirmBody,
        response: { 200: RecoveryCodes, ...errorResponses(401, 409, 422, 429) },
        detail: secured(
          "auth_totp_confirm",
          "Confirm the TOTP enrolment with a code",
          "Enables TOTP and answers ten one-time recovery codes, this once. 409 without an enrolment in progress (or when it was restarted meanwhile); 422 for a wrong code.",
        ),
      },
    )
    .delete(
      "",
      async (context) => {
        await mfa.disable(context.principal.user, context.body.password, context.body.code, meta(context));
        context.set.status = 204;
      },
      {
        auth: requireAuth,
        body: TotpDisableBody,
        response: { 204: t.Void({ description: "TOTP disabled" }), ...errorResponses(401, 409, 422, 429) },
        detail: secured(
          "auth_totp_disable",
          "Turn TOTP off",
          "Needs the password and a code (a recovery code works too). 409 when TOTP is not enabled.",
        ),
      },
    );
  const admin = new Elysia({ prefix: "/users", detail: { tags: ["users"] } }).use(guard).delete(
    "/:id/mfa",
    async (context) => {
      await mfa.adminReset(context.params.id, context.principal.user.id, meta(context));
      context.set.status = 204;
    },
    {
      auth: requirePermission("users:write"),
      params: IdParams,
      response: {
        204: t.Void({ description: "The user's TOTP and recovery codes are removed" }),
        ...errorResponses(401, 403, 404, 422),
      },
      detail: secured(
        "users_reset_mfa",
        "Turn a user's TOTP off (admin)",
        "For a user who lost the authenticator and the recovery codes. Audited (`mfa.disabled`).",
      ),
    },
  );
  return new Elysia().use(totp).use(admin);
}
