import {
  type AuthenticationResponseJSON,
  generateAuthenticationOptions,
  generateRegistrationOptions,
  type RegistrationResponseJSON,
  verifyAuthenticationResponse,
  verifyRegistrationResponse,
} from "@simplewebauthn/server";
import { errors } from "../../http/errors";
import type { RequestMeta } from "../../http/request-meta";
import type { Logger } from "../../platform/logger";
import { type Mailer, sendInBackground } from "../../platform/mail";
import type { AuditLog } from "../audit/service";
import { type PublicUser, toPublicUser } from "../users/model";
import type { UsersRepo } from "../users/repo";
import type { TokenPair } from "./model";
import type { PasskeyRepo } from "./passkey-repo";
import type { Sessions } from "./sessions";

/** How long a challenge waits for its answer. */
const CHALLENGE_MS = 5 * 60_000;
/**
 * A passkey is added or removed only from a session that logged in this recently: an access token stolen
 * from an older session cannot plant a credential of its own (which would outlive the token and skip
 * TOTP), nor take the owner's away.
 */
export const RECENT_LOGIN_MINUTES = 15;
const RP_NAME = "ReViewPoint";

export interface WebAuthnSettings {
  rpId: string;
  origins: string[];
}

const b64url = (bytes: Uint8Array) => Buffer.from(bytes).toString("base64url");
const fromB64url = (text: string) => Buffer.from(text, "base64url");

/** The challenge a response answers, read from its clientDataJSON (undefined when that is not readable). */
function challengeOf(clientDataJSON: string): string | undefined {
  try {
    const challenge = (JSON.parse(fromB64url(clientDataJSON).toString("utf8")) as { challenge?: unknown }).challenge;
    return typeof challenge === "string" && /^[A-Za-z0-9_-]{16,128}$/.test(challenge) ? challenge : undefined;
  } catch {
    return undefined;
  }
}

const unreadable = () => errors.badRequest("The WebAuthn response's clientDataJSON is not readable");

/**
 * Passkeys (WebAuthn, discoverable credentials with user verification) through @simplewebauthn/server.
 * Challenges are kept in the database for 5 minutes and taken by their one answer, found from the
 * response's clientDataJSON, so any instance can verify what another handed out.
 */
export function createPasskeyService(deps: {
  repo: PasskeyRepo;
  users: UsersRepo;
  sessions: Sessions;
  audit: AuditLog;
  /** Undefined when no origin is configured (ALLOWED_ORIGINS `*` without WEBAUTHN_ORIGINS). */
  settings: WebAuthnSettings | undefined;
  /** When the session logged in (undefined: no such session). */
  sessionStartedAt: (sessionId: string) => Promise<Date | undefined>;
  mailer: Mailer;
  logger: Logger;
}) {
  const { repo, users, sessions, audit, sessionStartedAt, mailer, logger } = deps;

  async function requireRecentLogin(sessionId: string, action: "Adding" | "Removing") {
    const startedAt = await sessionStartedAt(sessionId);
    if (!startedAt || Date.now() - startedAt.getTime() > RECENT_LOGIN_MINUTES * 60_000) {
      throw errors.forbidden(
        `${action} a passkey needs a recent sign-in: log in again (within ${RECENT_LOGIN_MINUTES} minutes)`,
      );
    }
  }

  function configured(): WebAuthnSettings {
    if (!deps.settings) throw errors.notFound("Passkey support (WEBAUTHN_ORIGINS is not configured)");
    return deps.settings;
  }

  const expiry = () => new Date(Date.now() + CHALLENGE_MS);

  const signInFailed = async (reason: string, meta: RequestMeta, userId?: string) => {
    await audit.recordAlone({
      action: "login.failed",
      actorId: null,
      target: userId ? { type: "user", id: userId } : undefined,
      details: { method: "passkey", reason },
      meta,
    });
    return errors.invalidCredentials("Passkey sign-in failed");
  };

  return {
    async list(userId: string) {
      const rows = await repo.listForUser(userId);
      return {
        items: rows.map((row) => ({
          id: row.id,
          name: row.name,
          created_at: row.createdAt.toISOString(),
          last_used_at: row.lastUsedAt?.toISOString() ?? null,
        })),
      };
    },

    async remove(user: PublicUser, sessionId: string, id: string, meta: RequestMeta): Promise<void> {
      await requireRecentLogin(sessionId, "Removing");
      const removed = await audit.transaction(async (tx) => {
        const row = await repo.remove(tx, user.id, id);
        if (row) {
          await audit.record(tx, {
            action: "passkey.removed",
            actorId: user.id,
            target: { type: "passkey", id: row.id },
            details: { user_id: user.id, name: row.name },
            meta,
          });
        }
        return row;
      });
      if (!removed) throw errors.notFound("Passkey");
    },

    /** Options for navigator.credentials.create(): a discoverable credential with user verification. */
    async registrationOptions(user: PublicUser, sessionId: string) {
      const { rpId } = configured();
      await requireRecentLogin(sessionId, "Adding");
      const existing = await repo.listForUser(user.id);
      const options = await generateRegistrationOptions({
        rpName: RP_NAME,
        rpID: rpId,
        userName: user.username,
        userID: new TextEncoder().encode(user.id),
        userDisplayName: user.name ?? user.username,
        timeout: CHALLENGE_MS,
        attestationType: "none",
        excludeCredentials: existing.map((row) => ({ id: row.credentialId, transports: row.transports })),
        authenticatorSelection: { residentKey: "required", requireResidentKey: true, userVerification: "required" },
      });
      await repo.saveChallenge({
        challenge: options.challenge,
        purpose: "register",
        userId: user.id,
        expiresAt: expiry(),
      });
      return options;
    },

    /** Verifies the attestation against the user's own live challenge and keeps the credential; the user is told by mail. */
    async register(
      user: PublicUser,
      sessionId: string,
      response: RegistrationResponseJSON,
      name: string | undefined,
      meta: RequestMeta,
    ) {
      const { rpId, origins } = configured();
      await requireRecentLogin(sessionId, "Adding");
      const challenge = challengeOf(response.response.clientDataJSON);
      if (!challenge) throw unreadable();
      if (!(await repo.takeChallenge(challenge, "register", user.id))) {
        throw errors.badRequest("Unknown, expired or already used challenge; ask for new options");
      }
      let verification: Awaited<ReturnType<typeof verifyRegistrationResponse>>;
      try {
        verification = await verifyRegistrationResponse({
          response,
          expectedChallenge: challenge,
          expectedOrigin: origins,
          expectedRPID: rpId,
          requireUserVerification: true,
        });
      } catch (error) {
        throw errors.badRequest(`Passkey registration rejected: ${(error as Error).message.slice(0, 200)}`);
      }
      if (!verification.verified) throw errors.badRequest("Passkey registration rejected");
      const { credential } = verification.registrationInfo;
      // The library does not compare them: the id kept (and looked up at sign-in) must be the one the
      // response names, which the schema also bounds to what the column holds.
      if (credential.id !== response.id) {
        throw errors.badRequest("Passkey registration rejected: the attested credential id is not the response's id");
      }
      const row = await audit.transaction(async (tx) => {
        const inserted = await repo.insert(tx, {
          userId: user.id,
          credentialId: credential.id,
          publicKey: b64url(credential.publicKey),
          counter: credential.counter,
          transports: credential.transports ?? [],
          name: name ?? "Passkey",
        });
        await audit.record(tx, {
          action: "passkey.added",
          actorId: user.id,
          target: { type: "passkey", id: inserted.id },
          details: { user_id: user.id, name: inserted.name },
          meta,
        });
        return inserted;
      });
      sendInBackground(
        mailer,
        logger,
        {
          to: user.email,
          subject: "A passkey was added to your ReViewPoint account",
          text: `A passkey named "${row.name}" was added to ${user.username} and can now sign in without a password.\n\nIf you did not add it, remove it under your account's passkeys, change your password and log out everywhere.`,
        },
        user.id,
      );
      return { id: row.id, name: row.name, created_at: row.createdAt.toISOString() };
    },

    /** Options for navigator.credentials.get() with no allowed list: the authenticator offers its passkeys. */
    async loginOptions() {
      const { rpId } = configured();
      const options = await generateAuthenticationOptions({
        rpID: rpId,
        userVerification: "required",
        timeout: CHALLENGE_MS,
      });
      await repo.saveChallenge({ challenge: options.challenge, purpose: "login", userId: null, expiresAt: expiry() });
      return options;
    },

    /**
     * A sign-in: the challenge is taken first (a replay finds none), then the signature is verified
     * against the stored key, then the counter must move forward (a clone is refused and audited), and
     * the session starts in the transaction that advances the counter.
     */
    async login(response: AuthenticationResponseJSON, meta: RequestMeta): Promise<TokenPair> {
      const { rpId, origins } = configured();
      const challenge = challengeOf(response.response.clientDataJSON);
      if (!challenge) throw unreadable();
      if (!(await repo.takeChallenge(challenge, "login", null))) throw await signInFailed("unknown_challenge", meta);
      const passkey = await repo.findByCredentialId(response.id);
      if (!passkey) throw await signInFailed("unknown_credential", meta);
      const handle = response.response.userHandle;
      if (handle !== undefined && fromB64url(handle).toString("utf8") !== passkey.userId) {
        throw await signInFailed("user_handle_mismatch", meta, passkey.userId);
      }
      let verification: Awaited<ReturnType<typeof verifyAuthenticationResponse>>;
      try {
        verification = await verifyAuthenticationResponse({
          response,
          expectedChallenge: challenge,
          expectedOrigin: origins,
          expectedRPID: rpId,
          // The counter is checked below, after the signature: the library checks it before.
          credential: { id: passkey.credentialId, publicKey: fromB64url(passkey.publicKey), counter: 0 },
          requireUserVerification: true,
        });
      } catch {
        throw await signInFailed("verification_failed", meta, passkey.userId);
      }
      if (!verification.verified) throw await signInFailed("bad_signature", meta, passkey.userId);
      const row = await users.findById(passkey.userId);
      if (!row?.isActive) throw await signInFailed("inactive", meta, passkey.userId);
      const counter = verification.authenticationInfo.newCounter;
      const subject = toPublicUser(row);
      const session = await audit.transaction(async (tx) => {
        if (!(await repo.holdOwner(tx, passkey.userId))) return "gone";
        return (await repo.advanceCounter(tx, passkey.id, counter))
          ? sessions.start(tx, subject, "passkey", meta)
          : undefined;
      });
      if (session === "gone") throw await signInFailed("inactive", meta, passkey.userId);
      if (!session) {
        await audit.recordAlone({
          action: "passkey.clone_detected",
          actorId: null,
          target: { type: "passkey", id: passkey.id },
          details: { user_id: passkey.userId, stored_counter: passkey.counter, presented_counter: counter },
          meta,
        });
        throw errors.invalidCredentials("Passkey sign-in failed");
      }
      return sessions.pairOf(subject, session);
    },
  };
}

export type PasskeyService = ReturnType<typeof createPasskeyService>;
