import { Elysia, t } from "elysia";
import { type AuthGuard, BEARER_SECURITY, requireAuth, requirePermission } from "../../http/auth";
import { errorResponses } from "../../http/errors";
import {
  AdminCreateBody,
  AdminPatch,
  ExportQuery,
  PasswordChange,
  ProfilePatch,
  User,
  UserList,
  UserListQuery,
} from "./model";
import type { UsersService } from "./service";

const secured = (summary: string, description?: string) => ({ summary, description, security: BEARER_SECURITY });
const IdParams = t.Object({ id: t.String({ format: "uuid" }) });

export function usersRoutes(deps: { users: UsersService; guard: AuthGuard }) {
  const { users, guard } = deps;
  const updateMe = {
    auth: requireAuth,
    body: ProfilePatch,
    response: { 200: User, ...errorResponses(401, 409, 422) },
    detail: secured("Update my profile", "Only the given fields change. 409 when the username or email is taken."),
  };

  return new Elysia({ prefix: "/users", detail: { tags: ["users"] } })
    .use(guard)
    .get("/me", ({ principal }) => principal.user, {
      auth: requireAuth,
      response: { 200: User, ...errorResponses(401) },
      detail: secured("My profile"),
    })
    .put("/me", ({ principal, body }) => users.update(principal.user.id, body), updateMe)
    .patch("/me", ({ principal, body }) => users.update(principal.user.id, body), updateMe)
    .post(
      "/me/password",
      async ({ principal, body, set }) => {
        await users.changePassword(
          principal.user.id,
          body.current_password,
          body.new_password,
          principal.claims.sid as string,
        );
        set.status = 204;
      },
      {
        auth: requireAuth,
        body: PasswordChange,
        response: { 204: t.Void(), ...errorResponses(401, 422) },
        detail: secured("Change my password", "Every other session of the account is logged out."),
      },
    )
    .delete(
      "/me",
      async ({ principal, set }) => {
        await users.deactivate(principal.user.id);
        set.status = 204;
      },
      {
        auth: requireAuth,
        response: { 204: t.Void(), ...errorResponses(401, 409) },
        detail: secured(
          "Deactivate my account",
          "Every token of the account stops working at once. 409 for the last active admin.",
        ),
      },
    )
    .get("", ({ query }) => users.list(query), {
      auth: requirePermission("users:read"),
      query: UserListQuery,
      response: { 200: UserList, ...errorResponses(401, 403, 422) },
      detail: secured("List users (admin)"),
    })
    .post(
      "",
      async ({ body, set }) => {
        const user = await users.create(body);
        set.status = 201;
        return user;
      },
      {
        auth: requirePermission("users:write"),
        body: AdminCreateBody,
        response: { 201: User, ...errorResponses(401, 403, 409, 422) },
        detail: secured("Create a user (admin)"),
      },
    )
    .get(
      "/export",
      ({ query }) =>
        new Response(users.export(query, query.format), {
          headers:
            query.format === "json"
              ? { "content-type": "application/x-ndjson; charset=utf-8" }
              : {
                  "content-type": "text/csv; charset=utf-8",
                  "content-disposition": 'attachment; filename="users.csv"',
                },
        }),
      {
        auth: requirePermission("users:read"),
        query: ExportQuery,
        response: {
          200: t.String({ description: "CSV (default) or JSON lines, streamed" }),
          ...errorResponses(401, 403, 422),
        },
        detail: secured("Export users (admin)", "Every user matching the filters, streamed, with no row cap."),
      },
    )
    .get("/:id", ({ params }) => users.get(params.id), {
      auth: requirePermission("users:read"),
      params: IdParams,
      response: { 200: User, ...errorResponses(401, 403, 404, 422) },
      detail: secured("Get a user (admin)"),
    })
    .patch("/:id", ({ params, body }) => users.update(params.id, body), {
      auth: requirePermission("users:write"),
      params: IdParams,
      body: AdminPatch,
      response: { 200: User, ...errorResponses(401, 403, 404, 409, 422) },
      detail: secured(
        "Update a user (admin)",
        "Deactivation and role changes apply to the user's very next request. 409 when it would leave no active admin.",
      ),
    })
    .delete(
      "/:id",
      async ({ params, set }) => {
        await users.delete(params.id);
        set.status = 204;
      },
      {
        auth: requirePermission("users:write"),
        params: IdParams,
        response: { 204: t.Void(), ...errorResponses(401, 403, 404, 409, 422) },
        detail: secured("Delete a user (admin)", "The user's files go with it. 409 for the last active admin."),
      },
    );
}
