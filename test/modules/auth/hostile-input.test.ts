import { describe, expect, test } from "bun:test";
import { API, call, makeApp, signUp } from "../../support";

/** Bodies no client should send: each must get a 4xx with the contract's error body, never a 500. */
const b64 = (text: string) => Buffer.from(text).toString("base64url");
const HOSTILE: unknown[] = [
  {},
  { code: 123456 },
  { code: ["123456"] },
  { code: "" },
  { code: "1".repeat(33) },
  { token: { $ne: null } },
  { mfa_token: null, code: "123456" },
  { password: 42, code: "123456" },
  { id: "%%%", rawId: "%%%", type: "public-key", response: {} },
  {
    id: "AAAA",
    rawId: "AAAA",
    type: "public-key",
    response: {
      clientDataJSON: b64('{"challenge": 7}'),
      attestationObject: "AAAA",
      authenticatorData: "AAAA",
      signature: "AAAA",
    },
  },
  {
    id: "AAAA",
    rawId: "AAAA",
    type: "public-key",
    response: {
      clientDataJSON: b64(JSON.stringify({ type: "webauthn.get", challenge: "A".repeat(43), origin: "x" })),
      attestationObject: b64("\u00a1\u00ff"),
      authenticatorData: "",
      signature: "",
      userHandle: "",
    },
    clientExtensionResults: { credProps: { rk: "yes" } },
  },
  {
    id: "AAAA",
    rawId: "BBBB",
    type: "public-key",
    response: { clientDataJSON: b64("[]"), authenticatorData: "A", signature: "A" },
  },
];

describe("hostile input on the identity routes", () => {
  test("every odd body gets a 4xx in the contract's format", async () => {
    const ctx = await makeApp();
    const account = await signUp(ctx.app);
    const routes: [string, string, boolean][] = [
      ["POST", "/auth/login/mfa", false],
      ["POST", "/auth/verify-email", false],
      ["POST", "/auth/mfa/totp", true],
      ["POST", "/auth/mfa/totp/confirm", true],
      ["DELETE", "/auth/mfa/totp", true],
      ["POST", "/auth/passkeys/register/options", true],
      ["POST", "/auth/passkeys/register/verify?name=x", true],
      ["POST", "/auth/passkeys/login/options", false],
      ["POST", "/auth/passkeys/login/verify", false],
    ];
    const seen: string[] = [];
    for (const [method, path, signedIn] of routes) {
      for (const body of HOSTILE) {
        const res = await call(ctx.app, method, `${API}${path}`, {
          body,
          token: signedIn ? account.access : undefined,
        });
        if (res.status < 400) continue; // an options route ignores what it is sent
        seen.push(`${method} ${path} ${res.status}`);
        expect({ path, body, status: res.status < 500 }).toEqual({ path, body, status: true });
        expect(typeof res.json?.error?.code).toBe("string");
      }
    }
    expect(seen.length).toBeGreaterThan(HOSTILE.length * 6);
  });
});
