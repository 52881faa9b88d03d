import { createHash, randomBytes } from "node:crypto";
import { errors } from "../../http/errors";
import type { RequestMeta } from "../../http/request-meta";
import type { Logger } from "../../platform/logger";
import { linkWithToken, type Mailer, sendInBackground } from "../../platform/mail";
import type { AuditLog } from "../audit/service";
import { type PublicUser, toPublicUser } from "../users/model";
import type { VerificationRepo } from "./verification-repo";

const sha256 = (token: string) => createHash("sha256").update(token).digest("hex");

/** Who gets mail about an address: enough of a user to write to. */
type Addressee = Pick<PublicUser, "id" | "username" | "email">;

/**
 * Email verification: a mailed link carries a random token (256 bits) that works once, until it expires,
 * and only for the address it was sent to (an email change deletes the user's pending tokens).
 */
export function createEmailVerification(deps: {
  repo: VerificationRepo;
  audit: AuditLog;
  mailer: Mailer;
  logger: Logger;
  config: { verifyUrl: string; lifetimeHours: number };
  /** Told once a user's row changed (the auth cache). */
  userChanged: (userId: string) => Promise<void>;
}) {
  const { repo, audit, mailer, logger, config, userChanged } = deps;

  async function send(user: Addressee): Promise<void> {
    const token = randomBytes(32).toString("base64url");
    await repo.insert({
      tokenHash: sha256(token),
      userId: user.id,
      email: user.email,
      expiresAt: new Date(Date.now() + config.lifetimeHours * 3_600_000),
    });
    // Not awaited: a slow or failing SMTP server must not fail a registration.
    sendInBackground(
      mailer,
      logger,
      {
        to: user.email,
        subject: "Verify your ReViewPoint email address",
        text: `Please confirm that ${user.email} belongs to ${user.username} by opening:\n${linkWithToken(config.verifyUrl, token)}\n\nThe link works once and expires in ${config.lifetimeHours} hours. If you did not sign up, ignore this mail.`,
      },
      user.id,
    );
  }

  return {
    send,

    /** Another link, for a signed-in user whose address is not verified yet. */
    async resend(user: PublicUser): Promise<void> {
      if (user.email_verified) throw errors.conflict("This email address is already verified");
      await send(user);
    },

    /** The new address gets a link; the old one is told, so a hijacked account's owner hears of it. */
    async emailChanged(user: Addressee, previousEmail: string): Promise<void> {
      await send(user);
      sendInBackground(
        mailer,
        logger,
        {
          to: previousEmail,
          subject: "Your ReViewPoint email address was changed",
          text: `The email address of ${user.username} was changed from ${previousEmail} to ${user.email}.\n\nIf you did not do this, reset your password and contact an administrator.`,
        },
        user.id,
      );
    },

    async verify(token: string, meta: RequestMeta): Promise<PublicUser> {
      const row = await audit.transaction(async (tx) => {
        const verified = await repo.spend(tx, sha256(token));
        if (verified) {
          await audit.record(tx, {
            action: "email.verified",
            actorId: verified.id,
            target: { type: "user", id: verified.id },
            details: { email: verified.email },
            meta,
          });
        }
        return verified;
      });
      if (!row) throw errors.badRequest("Invalid, expired or already used verification token");
      await userChanged(row.id);
      return toPublicUser(row);
    },
  };
}

export type EmailVerification = ReturnType<typeof createEmailVerification>;
