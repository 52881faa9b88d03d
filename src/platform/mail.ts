import nodemailer from "nodemailer";
import type { Logger } from "./logger";

export interface MailMessage {
  to: string;
  subject: string;
  text: string;
}

export interface Mailer {
  send(message: MailMessage): Promise<void>;
}

/**
 * SMTP when SMTP_URL is set. Without it, outside production the message is written to the log
 * (so a developer can follow a reset link); in production it is dropped with a warning.
 */
export function createMailer(options: {
  smtpUrl: string | undefined;
  from: string;
  environment: "development" | "test" | "production";
  logger: Logger;
}): Mailer {
  const { smtpUrl, from, environment, logger } = options;
  if (smtpUrl) {
    const transport = nodemailer.createTransport(smtpUrl);
    return {
      async send(message) {
        await transport.sendMail({ from, ...message });
      },
    };
  }
  return {
    async send(message) {
      if (environment === "production") {
        logger.warn("mail not sent: SMTP_URL is not configured", { subject: message.subject });
        return;
      }
      logger.info("mail (no SMTP_URL configured; shown here instead)", {
        to: message.to,
        subject: message.subject,
        body: message.text,
      });
    },
  };
}

/** A mailed link: `{token}` in `base` is replaced if present, else a `token` query parameter is added. */
export function linkWithToken(base: string, token: string): string {
  if (base.includes("{token}")) return base.replaceAll("{token}", encodeURIComponent(token));
  const url = new URL(base);
  url.searchParams.set("token", token);
  return url.toString();
}

/** Sends without making the caller wait or fail: a slow or failing SMTP server is logged, not answered. */
export function sendInBackground(mailer: Mailer, logger: Logger, message: MailMessage, userId: string): void {
  mailer
    .send(message)
    .catch((error: Error) =>
      logger.error("mail failed", { user_id: userId, subject: message.subject, error: error.message }),
    );
}
