import { randomBytes } from "node:crypto";
import { Secret, TOTP } from "otpauth";
import type { Executor } from "../../db/client";
import { errors } from "../../http/errors";
import type { RequestMeta } from "../../http/request-meta";
import type { Logger } from "../../platform/logger";
import { type Mailer, sendInBackground } from "../../platform/mail";
import type { PasswordHasher } from "../../platform/passwords";
import type { SecretBox } from "../../platform/secret-box";
import type { AuditLog } from "../audit/service";
import type { PublicUser } from "../users/model";
import type { UsersRepo } from "../users/repo";
import type { AttemptLimit } from "../users/service";
import type { MfaRepo, MfaRow } from "./mfa-repo";

const ISSUER = "ReViewPoint";
const PERIOD_SECONDS = 30;
const RECOVERY_CODES = 10;
/** RFC 4648 base32, lower case: 12 characters are 60 random bits. */
const RECOVERY_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567";

/** A code that may be right, to be spent inside the transaction of what it authorises. */
export type MfaProof = { kind: "totp"; step: number } | { kind: "recovery_code"; hash: string };

/** `xxxx-xxxx-xxxx`, from 60 random bits. */
function recoveryCode(): string {
  const bytes = randomBytes(12);
  const chars = [...bytes].map((byte) => RECOVERY_ALPHABET[byte & 31]).join("");
  return `${chars.slice(0, 4)}-${chars.slice(4, 8)}-${chars.slice(8)}`;
}

/** Codes as typed: spaces and hyphens (apps show "123 456", recovery codes come as xxxx-xxxx-xxxx) and case do not count. */
const normalise = (code: string) => code.toLowerCase().replace(/[\s-]/g, "");
const isTotpCode = (code: string) => /^\d{6}$/.test(code);

/**
 * TOTP (RFC 6238: SHA-1, 6 digits, 30 s, one step of drift) with recovery codes. The secret is sealed
 * with a key derived from SECRET_KEY and shown once, at enrolment. A code is accepted once: the last
 * accepted time step is kept, and a code of that step or an earlier one is refused.
 */
export function createMfaService(deps: {
  repo: MfaRepo;
  users: UsersRepo;
  passwords: PasswordHasher;
  box: SecretBox;
  hashRecoveryCode: (code: string) => string;
  audit: AuditLog;
  /** Counts attempts at the password (per account). */
  passwordAttempts: AttemptLimit;
  /** Counts guesses at a code (per account), and the run of them since the last right one. */
  codeAttempts: AttemptLimit & { succeeded(key: string): Promise<void> };
  /** Milliseconds since the epoch: the time codes are checked against. */
  now: () => number;
  mailer: Mailer;
  logger: Logger;
}) {
  const { repo, users, passwords, box, hashRecoveryCode, audit, passwordAttempts, codeAttempts, now } = deps;

  /** The owner hears of it, whoever turned TOTP off. */
  const tellOwnerTotpIsOff = (user: { id: string; username: string; email: string }, by: string) =>
    sendInBackground(
      deps.mailer,
      deps.logger,
      {
        to: user.email,
        subject: "Two-step sign-in was turned off on your ReViewPoint account",
        text: `TOTP codes are no longer asked of ${user.username} at sign-in (turned off by ${by}).\n\nIf you did not expect this, change your password and turn it on again.`,
      },
      user.id,
    );

  const totp = (secret: Secret, label = "") =>
    new TOTP({ issuer: ISSUER, label, algorithm: "SHA1", digits: 6, period: PERIOD_SECONDS, secret });

  function totpOf(row: MfaRow): TOTP {
    let base32: string;
    try {
      base32 = box.open(row.secret, row.userId);
    } catch (error) {
      throw new Error(`a TOTP secret cannot be decrypted (was SECRET_KEY changed?): ${(error as Error).message}`);
    }
    return totp(Secret.fromBase32(base32));
  }

  /** The time step a TOTP code belongs to (now, or one step either side), if it matches one. */
  function matchingStep(row: MfaRow, code: string): number | undefined {
    const timestamp = now();
    const delta = totpOf(row).validate({ token: code, timestamp, window: 1 });
    return delta === null ? undefined : Math.floor(timestamp / 1000 / PERIOD_SECONDS) + delta;
  }

  async function checkPassword(userId: string, password: string) {
    await passwordAttempts.take(userId);
    const row = await users.findById(userId);
    if (!row || !(await passwords.verify(password, row.passwordHash))) {
      throw errors.validation([{ field: "password", issue: "Password is incorrect" }]);
    }
  }

  const failed = (userId: string, stage: string, meta: RequestMeta) =>
    audit.recordAlone({
      action: "mfa.failed",
      actorId: userId,
      target: { type: "user", id: userId },
      details: { stage },
      meta,
    });

  const enabledRow = async (userId: string) => {
    const row = await repo.find(userId);
    return row?.enabledAt ? row : undefined;
  };

  /** What `code` would prove for this user (the TOTP step it matches, or a recovery code to try). */
  function proofOf(row: MfaRow, code: string): MfaProof | undefined {
    const normalised = normalise(code);
    if (isTotpCode(normalised)) {
      const step = matchingStep(row, normalised);
      return step === undefined ? undefined : { kind: "totp", step };
    }
    return normalised.length === 12 ? { kind: "recovery_code", hash: hashRecoveryCode(normalised) } : undefined;
  }

  /** Spends a proof inside `tx`: false when the code was used before (or the recovery code does not exist). */
  const spend = (tx: Executor, userId: string, proof: MfaProof) =>
    proof.kind === "totp" ? repo.acceptStep(tx, userId, proof.step) : repo.spendRecoveryCode(tx, userId, proof.hash);

  return {
    isEnabled: async (userId: string) => (await enabledRow(userId)) !== undefined,

    /**
     * For the second login step: counts the guess, then returns what the code would prove (undefined
     * for a code that cannot be right), or "not-enabled" when the user has no TOTP (any more).
     */
    async prepare(userId: string, code: string): Promise<MfaProof | undefined | "not-enabled"> {
      await codeAttempts.take(userId);
      const row = await enabledRow(userId);
      return row ? proofOf(row, code) : "not-enabled";
    },

    spend,
    failed,
    /** A right code: the run of wrong ones starts again. */
    succeeded: (userId: string) => codeAttempts.succeeded(userId),

    /** Starts an enrolment: a new secret, shown this once; TOTP is required only after `confirm`. */
    async enrol(user: PublicUser, password: string) {
      await checkPassword(user.id, password);
      const secret = new Secret({ size: 20 });
      if (!(await repo.startEnrolment(user.id, box.seal(secret.base32, user.id)))) {
        throw errors.conflict("TOTP is already enabled; disable it first");
      }
      return { secret: secret.base32, otpauth_url: totp(secret, user.username).toString() };
    },

    /** Enables the pending enrolment with a code from the authenticator; returns the recovery codes, shown this once. */
    async confirm(user: PublicUser, code: string, meta: RequestMeta) {
      await codeAttempts.take(user.id);
      const row = await repo.find(user.id);
      if (!row) throw errors.conflict("No TOTP enrolment in progress; start one first");
      if (row.enabledAt) throw errors.conflict("TOTP is already enabled");
      const typed = normalise(code);
      const step = isTotpCode(typed) ? matchingStep(row, typed) : undefined;
      if (step === undefined) {
        await failed(user.id, "confirm", meta);
        throw errors.validation([{ field: "code", issue: "The code is wrong or expired" }]);
      }
      const codes = Array.from({ length: RECOVERY_CODES }, recoveryCode);
      const enabled = await audit.transaction(async (tx) => {
        if (
          !(await repo.enable(
            tx,
            user.id,
            row.secret,
            step,
            codes.map((c) => hashRecoveryCode(normalise(c))),
          ))
        )
          return false;
        await audit.record(tx, {
          action: "mfa.enabled",
          actorId: user.id,
          target: { type: "user", id: user.id },
          meta,
        });
        return true;
      });
      if (!enabled)
        throw errors.conflict("The enrolment was confirmed or restarted meanwhile; confirm the current one");
      await codeAttempts.succeeded(user.id);
      return { recovery_codes: codes };
    },

    /** Turns TOTP off with the password and a code (a recovery code works too). */
    async disable(user: PublicUser, password: string, code: string, meta: RequestMeta) {
      await checkPassword(user.id, password);
      await codeAttempts.take(user.id);
      const row = await enabledRow(user.id);
      if (!row) throw errors.conflict("TOTP is not enabled");
      const proof = proofOf(row, code);
      const removed =
        proof !== undefined &&
        (await audit.transaction(async (tx) => {
          if (!(await spend(tx, user.id, proof))) return false;
          await repo.remove(tx, user.id);
          await audit.record(tx, {
            action: "mfa.disabled",
            actorId: user.id,
            target: { type: "user", id: user.id },
            details: { by: "self" },
            meta,
          });
          return true;
        }));
      if (!removed) {
        await failed(user.id, "disable", meta);
        throw errors.validation([{ field: "code", issue: "The code is wrong, expired or already used" }]);
      }
      await codeAttempts.succeeded(user.id);
      tellOwnerTotpIsOff(user, "the account itself");
    },

    /** An admin turns a user's TOTP off (the user lost the authenticator and the recovery codes). */
    async adminReset(userId: string, actorId: string, meta: RequestMeta): Promise<void> {
      const user = await users.findById(userId);
      if (!user) throw errors.notFound("User");
      const removed = await audit.transaction(async (tx) => {
        if (!(await repo.remove(tx, userId))) return false;
        await audit.record(tx, {
          action: "mfa.disabled",
          actorId,
          target: { type: "user", id: userId },
          details: { by: "admin" },
          meta,
        });
        return true;
      });
      if (!removed) return;
      // A user locked out by a run of wrong codes (maybe not theirs) starts again with the new enrolment.
      await codeAttempts.succeeded(userId);
      tellOwnerTotpIsOff(user, "an administrator");
    },
  };
}

export type MfaService = ReturnType<typeof createMfaService>;
