// The floor every server row is compared with: Bun.serve answering JSON and nothing else, plus the
// floors of the files rows: a POST that reads its body, a POST that streams it (/stream), and GET /file
// streaming the file named by the second argument. All are routes, so the catch-all JSON answer is unchanged.
const port = Number(process.argv[2]);
const file = process.argv[3];
Bun.serve({
  hostname: "127.0.0.1",
  port,
  development: false,
  // The big upload's ceiling sends 200 MiB to /stream.
  maxRequestBodySize: Number.POSITIVE_INFINITY,
  routes: {
    "/api/v1/uploads": {
      POST: async (request) => {
        await request.arrayBuffer();
        return Response.json({ status: "ok" }, { status: 201 });
      },
    },
    // The big upload's ceiling: read and dropped piece by piece, as the server streams an upload.
    "/stream": {
      POST: async (request) => {
        for await (const _ of request.body ?? []);
        return Response.json({ status: "ok" }, { status: 201 });
      },
    },
    "/file": () => (file ? new Response(Bun.file(file)) : new Response("no file", { status: 404 })),
  },
  fetch: () => Response.json({ status: "ok" }),
});
