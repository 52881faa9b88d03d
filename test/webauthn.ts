import { createHash, generateKeyPairSync, type KeyObject, sign } from "node:crypto";
import { isoCBOR } from "@simplewebauthn/server/helpers";

/**
 * A software authenticator for the tests (ES256, `none` attestation), built from the WebAuthn spec's byte
 * layouts, so the server's verification runs on real signatures. The browser test uses Chromium's own
 * virtual authenticator instead.
 */

const b64url = (bytes: Uint8Array | string) => Buffer.from(bytes).toString("base64url");
const sha256 = (data: Uint8Array | string) => createHash("sha256").update(data).digest();

const FLAG_UP = 0x01;
const FLAG_UV = 0x04;
const FLAG_AT = 0x40;

function authenticatorData(rpId: string, flags: number, counter: number, attested?: Uint8Array): Buffer {
  const count = Buffer.alloc(4);
  count.writeUInt32BE(counter);
  return Buffer.concat([sha256(rpId), Buffer.from([flags]), count, ...(attested ? [attested] : [])]);
}

interface Options {
  challenge: string;
  rp?: { id?: string };
  rpId?: string;
  user?: { id: string };
}

export interface Overrides {
  origin?: string;
  rpId?: string;
  /** Without user verification (the UV flag unset). */
  unverified?: boolean;
  /** The signature counter to report (default: one more than last time). */
  counter?: number;
  /** Another challenge than the options' one. */
  challenge?: string;
}

export class SoftAuthenticator {
  readonly credentialId: string;
  private readonly privateKey: KeyObject;
  private readonly publicKey: KeyObject;
  private userHandle = "";
  counter = 0;

  /** `idBytes`: the length of its credential id (the spec allows at most 1023). */
  constructor(
    readonly origin: string,
    idBytes = 32,
  ) {
    this.credentialId = b64url(crypto.getRandomValues(new Uint8Array(idBytes)));
    ({ privateKey: this.privateKey, publicKey: this.publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" }));
  }

  private cosePublicKey(): Uint8Array {
    const jwk = this.publicKey.export({ format: "jwk" });
    return isoCBOR.encode(
      new Map<number, number | Uint8Array>([
        [1, 2], // kty: EC2
        [3, -7], // alg: ES256
        [-1, 1], // crv: P-256
        [-2, Buffer.from(jwk.x as string, "base64url")],
        [-3, Buffer.from(jwk.y as string, "base64url")],
      ]),
    );
  }

  private clientData(type: string, challenge: string, origin: string) {
    return b64url(JSON.stringify({ type, challenge, origin, crossOrigin: false }));
  }

  /** `startRegistration()`'s result for these creation options. */
  register(options: Options, overrides: Overrides = {}) {
    const rpId = overrides.rpId ?? (options.rp?.id as string);
    this.userHandle = options.user?.id ?? "";
    const id = Buffer.from(this.credentialId, "base64url");
    const length = Buffer.alloc(2);
    length.writeUInt16BE(id.length);
    const attested = Buffer.concat([Buffer.alloc(16), length, id, this.cosePublicKey()]);
    const flags = FLAG_UP | FLAG_AT | (overrides.unverified ? 0 : FLAG_UV);
    const authData = authenticatorData(rpId, flags, this.counter, attested);
    const attestationObject = isoCBOR.encode(
      new Map<string, unknown>([
        ["fmt", "none"],
        ["attStmt", new Map()],
        ["authData", authData],
      ]) as Parameters<typeof isoCBOR.encode>[0],
    );
    return {
      id: this.credentialId,
      rawId: this.credentialId,
      response: {
        clientDataJSON: this.clientData(
          "webauthn.create",
          overrides.challenge ?? options.challenge,
          overrides.origin ?? this.origin,
        ),
        attestationObject: b64url(attestationObject),
        transports: ["internal"],
      },
      clientExtensionResults: {},
      type: "public-key",
    };
  }

  /** `startAuthentication()`'s result for these request options, signed with this authenticator's key. */
  authenticate(options: Options, overrides: Overrides = {}) {
    const rpId = overrides.rpId ?? (options.rpId as string);
    this.counter = overrides.counter ?? this.counter + 1;
    const flags = FLAG_UP | (overrides.unverified ? 0 : FLAG_UV);
    const authData = authenticatorData(rpId, flags, this.counter);
    const clientDataJSON = this.clientData(
      "webauthn.get",
      overrides.challenge ?? options.challenge,
      overrides.origin ?? this.origin,
    );
    const signature = sign(
      "sha256",
      Buffer.concat([authData, sha256(Buffer.from(clientDataJSON, "base64url"))]),
      this.privateKey,
    );
    return {
      id: this.credentialId,
      rawId: this.credentialId,
      response: {
        clientDataJSON,
        authenticatorData: b64url(authData),
        signature: b64url(signature),
        userHandle: this.userHandle,
      },
      clientExtensionResults: {},
      type: "public-key",
    };
  }
}
