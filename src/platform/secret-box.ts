import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes } from "node:crypto";

const VERSION = "v1";
const IV_BYTES = 12;
const TAG_BYTES = 16;

/** A 256-bit key for one purpose, derived from SECRET_KEY (HKDF-SHA-256): one secret, unrelated keys. */
function deriveKey(secretKey: string, purpose: string): Buffer {
  return Buffer.from(hkdfSync("sha256", secretKey, "reviewpoint", purpose, 32));
}

/**
 * Encryption at rest (AES-256-GCM) with a key derived from SECRET_KEY. `context` (e.g. the owner's id)
 * is authenticated: a sealed value copied to another row does not open there. Changing SECRET_KEY makes
 * every sealed value unreadable.
 */
export function secretBox(secretKey: string, purpose: string) {
  const key = deriveKey(secretKey, purpose);
  return {
    seal(plaintext: string, context: string): string {
      const iv = randomBytes(IV_BYTES);
      const cipher = createCipheriv("aes-256-gcm", key, iv).setAAD(Buffer.from(context));
      const sealed = Buffer.concat([cipher.update(plaintext, "utf8"), cipher.final()]);
      return `${VERSION}.${Buffer.concat([iv, cipher.getAuthTag(), sealed]).toString("base64url")}`;
    },

    /** Throws when the value was tampered with, sealed for another context or under another key. */
    open(sealed: string, context: string): string {
      const [version, body = ""] = sealed.split(".");
      if (version !== VERSION) throw new Error("unknown sealed value format");
      const bytes = Buffer.from(body, "base64url");
      const decipher = createDecipheriv("aes-256-gcm", key, bytes.subarray(0, IV_BYTES))
        .setAAD(Buffer.from(context))
        .setAuthTag(bytes.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
      return Buffer.concat([decipher.update(bytes.subarray(IV_BYTES + TAG_BYTES)), decipher.final()]).toString("utf8");
    },
  };
}

export type SecretBox = ReturnType<typeof secretBox>;

/** HMAC-SHA-256 under a key derived from SECRET_KEY: a stolen table alone cannot be brute-forced offline. */
export function keyedHash(secretKey: string, purpose: string): (value: string) => string {
  const key = deriveKey(secretKey, purpose);
  return (value) => createHmac("sha256", key).update(value).digest("hex");
}
