// The floor every server row is compared with: Bun.serve answering JSON and nothing else.
const port = Number(process.argv[2]);
Bun.serve({ hostname: "127.0.0.1", port, development: false, fetch: () => Response.json({ status: "ok" }) });
