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

export const MfaChallenge = t.Object(
  {
    mfa_required: t.Literal(true),
    mfa_token: t.String({ description: "For `POST /auth/login/mfa`, within 5 minutes, once" }),
    methods: t.Array(t.Literal("totp")),
  },
  { title: "MfaChallenge", description: "The password was right; a TOTP or recovery code is needed next" },
);
export const LoginResponse = t.Union([Tokens, MfaChallenge], {
  description: "Tokens, or (TOTP enabled) an MfaChallenge for the second step",
});
export type LoginResult = typeof LoginResponse.static;

/** A TOTP code (6 digits) or a recovery code (`xxxx-xxxx-xxxx`). */
const Code = SingleLine({ minLength: 1, maxLength: 32, examples: ["123456"] });
export const MfaLoginBody = t.Object({ mfa_token: SingleLine({ maxLength: 4096 }), code: Code });
export const TotpEnrolBody = t.Object({ password: GivenPassword });
export const TotpEnrolment = t.Object(
  {
    secret: t.String({ description: "Base32; shown this once" }),
    otpauth_url: t.String({ description: "otpauth://totp/… for a QR code" }),
  },
  { title: "TotpEnrolment", description: "Enrolment started; confirm it with a code" },
);
export const TotpConfirmBody = t.Object({ code: Code });
export const RecoveryCodes = t.Object(
  { recovery_codes: t.Array(t.String(), { minItems: 10, maxItems: 10 }) },
  { title: "RecoveryCodes", description: "TOTP enabled; ten one-time recovery codes, shown this once" },
);
export const TotpDisableBody = t.Object({ password: GivenPassword, code: Code });

export const Session = t.Object(
  {
    id: t.String({ format: "uuid" }),
    created_at: t.String({ format: "date-time" }),
    last_used_at: t.String({ format: "date-time" }),
    user_agent: t.Nullable(t.String()),
    ip: t.Nullable(t.String()),
    current: t.Boolean({ description: "The session of the token making this request" }),
  },
  { title: "Session" },
);
export type SessionInfo = typeof Session.static;
export const SessionList = t.Object(
  { items: t.Array(Session) },
  { title: "SessionList", description: "Live sessions, newest first" },
);

export const VerifyEmailBody = t.Object({ token: SingleLine({ maxLength: 256 }) });

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

export type TokenType = "access" | "refresh" | "reset" | "mfa";

export interface Claims {
  sub: string;
  username: string;
  role: Role;
  type: TokenType;
  jti: string;
  /** The login session the token belongs to (access and refresh tokens). */
  sid?: string;
  /** Reset and mfa tokens: a fingerprint of the password hash they were issued against. */
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

/** base64url as WebAuthn JSON carries binary fields (padding tolerated). */
const Base64Url = (maxLength: number) =>
  t.String({ pattern: "^[A-Za-z0-9_-]*={0,2}$", maxLength, error: "Must be base64url" });
const Transports = t.Array(SingleLine({ maxLength: 32 }), { maxItems: 10 });
const Attachment = t.Nullable(t.Union([t.Literal("platform"), t.Literal("cross-platform")]));
const ExtensionResults = t.Record(t.String(), t.Unknown());

/** `startRegistration()`'s result from @simplewebauthn/browser, as it is. */
export const RegistrationResponse = t.Object(
  {
    id: Base64Url(1400),
    rawId: Base64Url(1400),
    response: t.Object({
      clientDataJSON: Base64Url(16_384),
      attestationObject: Base64Url(262_144),
      authenticatorData: t.Optional(Base64Url(262_144)),
      transports: t.Optional(Transports),
      publicKeyAlgorithm: t.Optional(t.Integer()),
      publicKey: t.Optional(Base64Url(16_384)),
    }),
    authenticatorAttachment: t.Optional(Attachment),
    clientExtensionResults: t.Optional(ExtensionResults),
    type: t.Literal("public-key"),
  },
  { title: "RegistrationResponseJSON" },
);
/** `startAuthentication()`'s result from @simplewebauthn/browser, as it is. */
export const AuthenticationResponse = t.Object(
  {
    id: Base64Url(1400),
    rawId: Base64Url(1400),
    response: t.Object({
      clientDataJSON: Base64Url(16_384),
      authenticatorData: Base64Url(262_144),
      signature: Base64Url(16_384),
      userHandle: t.Optional(t.Nullable(Base64Url(1024))),
    }),
    authenticatorAttachment: t.Optional(Attachment),
    clientExtensionResults: t.Optional(ExtensionResults),
    type: t.Literal("public-key"),
  },
  { title: "AuthenticationResponseJSON" },
);
export const PasskeyNameQuery = t.Object({
  name: t.Optional(SingleLine({ minLength: 1, maxLength: 100, description: "What to call the passkey" })),
});

const ExtensionInputs = t.Object({
  appid: t.Optional(t.String()),
  credProps: t.Optional(t.Boolean()),
  hmacCreateSecret: t.Optional(t.Boolean()),
  minPinLength: t.Optional(t.Boolean()),
});
const Descriptor = t.Object({
  id: t.String(),
  type: t.String({ examples: ["public-key"] }),
  transports: t.Optional(t.Array(t.String())),
});
/** What @simplewebauthn/server generates and `startRegistration({optionsJSON})` takes. */
export const CreationOptions = t.Object(
  {
    rp: t.Object({ name: t.String(), id: t.Optional(t.String()) }),
    user: t.Object({ id: t.String(), name: t.String(), displayName: t.String() }),
    challenge: t.String(),
    pubKeyCredParams: t.Array(t.Object({ alg: t.Integer(), type: t.Literal("public-key") })),
    timeout: t.Optional(t.Integer()),
    excludeCredentials: t.Optional(t.Array(Descriptor)),
    authenticatorSelection: t.Optional(
      t.Object({
        authenticatorAttachment: t.Optional(t.String()),
        requireResidentKey: t.Optional(t.Boolean()),
        residentKey: t.Optional(t.String()),
        userVerification: t.Optional(t.String()),
      }),
    ),
    hints: t.Optional(t.Array(t.String())),
    attestation: t.Optional(t.String()),
    attestationFormats: t.Optional(t.Array(t.String())),
    extensions: t.Optional(ExtensionInputs),
  },
  { title: "PublicKeyCredentialCreationOptionsJSON", description: "For navigator.credentials.create()" },
);
/** What @simplewebauthn/server generates and `startAuthentication({optionsJSON})` takes. */
export const RequestOptions = t.Object(
  {
    challenge: t.String(),
    timeout: t.Optional(t.Integer()),
    rpId: t.Optional(t.String()),
    allowCredentials: t.Optional(t.Array(Descriptor)),
    userVerification: t.Optional(t.String()),
    hints: t.Optional(t.Array(t.String())),
    extensions: t.Optional(ExtensionInputs),
  },
  { title: "PublicKeyCredentialRequestOptionsJSON", description: "For navigator.credentials.get()" },
);
export const PasskeyInfo = t.Object(
  { id: t.String({ format: "uuid" }), name: t.String(), created_at: t.String({ format: "date-time" }) },
  { title: "Passkey" },
);
export const PasskeyList = t.Object(
  {
    items: t.Array(
      t.Composite([PasskeyInfo, t.Object({ last_used_at: t.Nullable(t.String({ format: "date-time" })) })]),
    ),
  },
  { title: "PasskeyList", description: "The user's passkeys, oldest first" },
);
/** Options routes take an empty JSON object (or no body). */
export const EmptyBody = t.Optional(t.Object({}));
