import type { AuthenticationResponseJSON, RegistrationResponseJSON } from "@simplewebauthn/server";
import { Elysia, t } from "elysia";
import { type AuthGuard, requireAuth, secured } from "../../http/auth";
import { errorResponses } from "../../http/errors";
import type { RateLimits } from "../../http/rate-limit";
import { perIp } from "../../http/rate-limit";
import type { MetaReader } from "../../http/request-meta";
import { noStore } from "../../http/security-headers";
import { IdParams } from "../users/model";
import {
  AuthenticationResponse,
  CreationOptions,
  EmptyBody,
  PasskeyInfo,
  PasskeyList,
  PasskeyNameQuery,
  type Principal,
  RegistrationResponse,
  RequestOptions,
  Tokens,
} from "./model";
import { type PasskeyService, RECENT_LOGIN_MINUTES } from "./passkeys";

/** The library's types, from bodies the schemas validated (it checks the rest itself). */
const registration = (body: typeof RegistrationResponse.static) =>
  ({ ...body, clientExtensionResults: body.clientExtensionResults ?? {} }) as RegistrationResponseJSON;
const authentication = (body: typeof AuthenticationResponse.static) =>
  ({
    ...body,
    response: { ...body.response, userHandle: body.response.userHandle ?? undefined },
    clientExtensionResults: body.clientExtensionResults ?? {},
  }) as AuthenticationResponseJSON;

export function passkeyRoutes(deps: {
  passkeys: PasskeyService;
  guard: AuthGuard<Principal>;
  limits: RateLimits["perRoute"];
  meta: MetaReader;
}) {
  const { passkeys, guard, limits, meta } = deps;
  return new Elysia({ prefix: "/auth/passkeys", detail: { tags: ["auth"] } })
    .use(guard)
    .use(limits)
    .post("/register/options", ({ principal }) => passkeys.registrationOptions(principal.user, principal.claims.sid), {
      auth: requireAuth,
      body: EmptyBody,
      response: { 200: CreationOptions, ...errorResponses(401, 403, 404, 422) },
      detail: secured(
        "auth_passkey_register_options",
        "Start registering a passkey",
        `Answers \`PublicKeyCredentialCreationOptionsJSON\` for \`startRegistration({optionsJSON})\` of @simplewebauthn/browser: a discoverable credential with user verification. The challenge lives 5 minutes and works once. 403 unless this session logged in within the last ${RECENT_LOGIN_MINUTES} minutes; 404 when passkeys are not configured.`,
      ),
    })
    .post(
      "/register/verify",
      async (context) => {
        const created = await passkeys.register(
          context.principal.user,
          context.principal.claims.sid,
          registration(context.body),
          context.query.name,
          meta(context),
        );
        context.set.status = 201;
        return created;
      },
      {
        auth: requireAuth,
        body: RegistrationResponse,
        query: PasskeyNameQuery,
        response: {
          201: t.Composite([PasskeyInfo], { description: "The passkey is registered; the user is told by mail" }),
          ...errorResponses(400, 401, 403, 404, 409, 422),
        },
        detail: secured(
          "auth_passkey_register_verify",
          "Finish registering a passkey",
          `Takes \`startRegistration()\`'s result as it is (\`?name=\` names the passkey). 400 when the challenge is unknown, expired or used, or the attestation does not verify (origin, RP id, user verification); 403 unless this session logged in within the last ${RECENT_LOGIN_MINUTES} minutes.`,
        ),
      },
    )
    .get("", ({ principal }) => passkeys.list(principal.user.id), {
      auth: requireAuth,
      response: { 200: PasskeyList, ...errorResponses(401) },
      detail: secured("auth_list_passkeys", "My passkeys"),
    })
    .delete(
      "/:id",
      async (context) => {
        await passkeys.remove(context.principal.user, context.principal.claims.sid, context.params.id, meta(context));
        context.set.status = 204;
      },
      {
        auth: requireAuth,
        params: IdParams,
        response: { 204: t.Void({ description: "Passkey removed" }), ...errorResponses(401, 403, 404, 422) },
        detail: secured(
          "auth_remove_passkey",
          "Remove one of my passkeys",
          `Another user's passkey is a 404. 403 unless this session logged in within the last ${RECENT_LOGIN_MINUTES} minutes.`,
        ),
      },
    )
    .post("/login/options", () => passkeys.loginOptions(), {
      body: EmptyBody,
      rateLimit: { rule: "loginIp", key: perIp },
      response: { 200: RequestOptions, ...errorResponses(404, 422, 429) },
      detail: {
        operationId: "auth_passkey_login_options",
        summary: "Start a passkey sign-in",
        description:
          "Answers `PublicKeyCredentialRequestOptionsJSON` for `startAuthentication({optionsJSON})`, with no credential list: the authenticator offers its discoverable passkeys. The challenge lives 5 minutes and works once.",
      },
    })
    .post(
      "/login/verify",
      (context) => {
        noStore(context.set);
        return passkeys.login(authentication(context.body), meta(context));
      },
      {
        body: AuthenticationResponse,
        rateLimit: { rule: "loginIp", key: perIp },
        response: { 200: Tokens, ...errorResponses(400, 401, 404, 422, 429) },
        detail: {
          operationId: "auth_passkey_login_verify",
          summary: "Sign in with a passkey",
          description:
            "Takes `startAuthentication()`'s result as it is. A verified passkey is a full login (it satisfies MFA) and starts a session. 401 when the challenge is unknown, expired or used, the signature or origin does not verify, the signature counter did not move forward (a cloned authenticator: audited), or the account is deactivated.",
        },
      },
    );
}
