import { Elysia, t } from "elysia";
import { type AuthGuard, requireAuth, requirePermission, secured } from "../../http/auth";
import { errorResponses } from "../../http/errors";
import type { MetaReader } from "../../http/request-meta";
import {
  AdminCreateBody,
  AdminPatch,
  ExportQuery,
  IdParams,
  PasswordChange,
  ProfilePatch,
  type PublicUser,
  User,
  UserList,
  UserListQuery,
} from "./model";
import type { UsersService } from "./service";

/** What these routes need of the authenticated caller. */
export type UsersPrincipal = { user: PublicUser; claims: { sid: string } };

export function usersRoutes<P extends UsersPrincipal>(deps: {
  users: UsersService;
  guard: AuthGuard<P>;
  meta: MetaReader;
}) {
  const { users, guard, meta } = deps;
  const acting = (context: Parameters<MetaReader>[0] & { principal: P }) => ({
    actorId: context.principal.user.id,
    meta: meta(context),
  });
  const updateMe = (operationId: string) => ({
    auth: requireAuth,
    body: ProfilePatch,
    response: { 200: User, ...errorResponses(401, 409, 422) },
    detail: secured(
      operationId,
      "Update my profile",
      "Only the given fields change. A new `email` needs `current_password` (attempts limited like a password change); the new address is then unverified and gets a verification link, and the old one is told. 409 when the username or email is taken.",
    ),
  });

  return new Elysia({ prefix: "/users", detail: { tags: ["users"] } })
    .use(guard)
    .get("/me", ({ principal }) => principal.user, {
      auth: requireAuth,
      response: { 200: User, ...errorResponses(401) },
      detail: secured("users_me", "My profile"),
    })
    .put(
      "/me",
      (context) => users.updateProfile(context.principal.user.id, context.body, meta(context)),
      updateMe("users_replace_me"),
    )
    .patch(
      "/me",
      (context) => users.updateProfile(context.principal.user.id, context.body, meta(context)),
      updateMe("users_update_me"),
    )
    .post(
      "/me/password",
      async (context) => {
        const { principal, body } = context;
        await users.changePassword(
          principal.user.id,
          body.current_password,
          body.new_password,
          principal.claims.sid,
          meta(context),
        );
        context.set.status = 204;
      },
      {
        auth: requireAuth,
        body: PasswordChange,
        response: { 204: t.Void({ description: "Password changed" }), ...errorResponses(401, 422) },
        detail: secured(
          "users_change_password",
          "Change my password",
          "Every other session of the account is logged out, and every reset link issued before is void. Attempts are limited per account (`RATE_LIMIT_PASSWORD_CHANGE`).",
        ),
      },
    )
    .delete(
      "/me",
      async (context) => {
        await users.deactivate(context.principal.user.id, meta(context));
        context.set.status = 204;
      },
      {
        auth: requireAuth,
        response: { 204: t.Void({ description: "Account deactivated" }), ...errorResponses(401, 409) },
        detail: secured(
          "users_deactivate_me",
          "Deactivate my account",
          "Every token of the account stops working at once. 409 for the last active admin.",
        ),
      },
    )
    .get("", ({ query }) => users.list(query), {
      auth: requirePermission("users:read"),
      query: UserListQuery,
      response: { 200: UserList, ...errorResponses(401, 403, 422) },
      detail: secured("users_list", "List users (admin)"),
    })
    .post(
      "",
      async (context) => {
        const user = await users.create(context.body, acting(context));
        context.set.status = 201;
        return user;
      },
      {
        auth: requirePermission("users:write"),
        body: AdminCreateBody,
        response: {
          201: t.Composite([User], { description: "The created user" }),
          ...errorResponses(401, 403, 409, 422),
        },
        detail: secured("users_create", "Create a user (admin)"),
      },
    )
    .get(
      "/export",
      async ({ query }) =>
        new Response(await users.export(query, query.format), {
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
        detail: {
          ...secured(
            "users_export",
            "Export users (admin)",
            "Every user matching the filters, streamed, with no row cap.",
          ),
          // The real media types, which the generator cannot know from a string schema.
          "x-response-media-types": { 200: ["text/csv", "application/x-ndjson"] },
        },
      },
    )
    .get("/:id", ({ params }) => users.get(params.id), {
      auth: requirePermission("users:read"),
      params: IdParams,
      response: { 200: User, ...errorResponses(401, 403, 404, 422) },
      detail: secured("users_get", "Get a user (admin)"),
    })
    .patch("/:id", (context) => users.update(context.params.id, context.body, acting(context)), {
      auth: requirePermission("users:write"),
      params: IdParams,
      body: AdminPatch,
      response: { 200: User, ...errorResponses(401, 403, 404, 409, 422) },
      detail: secured(
        "users_update",
        "Update a user (admin)",
        "Deactivation and role changes apply to the user's very next request. 409 when it would leave no active admin.",
      ),
    })
    .delete(
      "/:id",
      async (context) => {
        await users.delete(context.params.id, acting(context));
        context.set.status = 204;
      },
      {
        auth: requirePermission("users:write"),
        params: IdParams,
        response: { 204: t.Void({ description: "User deleted" }), ...errorResponses(401, 403, 404, 409, 422) },
        detail: secured(
          "users_delete",
          "Delete a user (admin)",
          "The user's files go with it. 409 for the last active admin.",
        ),
      },
    );
}
