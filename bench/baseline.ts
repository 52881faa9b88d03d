// The floor every server row is compared with: Bun.serve answering JSON and nothing else, plus the two
// floors of the files rows: a POST that reads its body, and GET /file streaming the file named by the
// second argument. Both are routes, so the catch-all JSON answer is unchanged.
const port = Number(process.argv[2]);
const file = process.argv[3];
Bun.serve({
  hostname: "127.0.0.1",
  port,
  development: false,
  routes: {
    "/api/v1/uploads": {
      POST: async (request) => {
        await request.arrayBuffer();
        return Response.json({ status: "ok" }, { status: 201 });
      },
    },
    "/file": () => (file ? new Response(Bun.file(file)) : new Response("no file", { status: 404 })),
  },
  fetch: () => Response.json({ status: "ok" }),
});
