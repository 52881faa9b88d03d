import { expect, test } from "bun:test";
import { API, call, makeApp, signUp } from "../support";

test("no response body or log line ever contains a submitted password, hash or token", async () => {
  const { app, logs } = await makeApp();
  const password = "Sup3rSecretPassw0rd";
  const account = await signUp(app, { password });
  const bodies: string[] = [];
  const send = async (...args: Parameters<typeof call>) => {
    const res = await call(...args);
    bodies.push(res.text);
    return res;
  };
  await send(app, "POST", `${API}/auth/login`, {
    body: { username: account.user.username, password: "Wr0ngButSecret" },
  });
  await send(app, "POST", `${API}/auth/login`, { body: { username: "nobody", password } });
  await send(app, "POST", `${API}/auth/register`, { body: { username: "x", email: "bad", password } });
  await send(app, "POST", `${API}/auth/register`, {
    body: { username: account.user.username, email: "e@example.com", password },
  });
  await send(app, "POST", `${API}/users/me/password`, {
    token: account.access,
    body: { current_password: "Wr0ngButSecret", new_password: password },
  });
  await send(app, "POST", `${API}/auth/reset-password`, { body: { token: account.refresh, new_password: password } });
  await send(app, "GET", `${API}/users/me`, { headers: { authorization: `Bearer ${account.access}x` } });
  await Bun.sleep(10);
  const everything = [...bodies, ...logs].join("\n");
  for (const secret of [password, "Wr0ngButSecret", account.access, account.refresh, "$2b$", "$2a$"]) {
    expect(everything).not.toContain(secret);
  }
  expect(logs.length).toBeGreaterThan(5);
});
