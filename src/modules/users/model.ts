import { t } from "elysia";
import type { UserRow } from "../../db/schema";
import { MULTI_LINE_CHARS, MultiLine, SingleLine } from "../../http/text";

const USERNAME_RULE = "3 to 50 characters: letters, digits, '_', '.' or '-'";
const PASSWORD_RULE =
  "8 to 128 characters with at least one letter and one digit, and no control characters but tab and newline";

export const Username = t.String({
  minLength: 3,
  maxLength: 50,
  pattern: "^[A-Za-z0-9_.-]+$",
  error: `Username must be ${USERNAME_RULE}`,
  examples: ["ada_lovelace"],
});
export const Email = t.String({
  format: "email",
  maxLength: 320,
  error: "Invalid email format",
  examples: ["ada@example.com"],
});
export const Password = t.String({
  minLength: 8,
  maxLength: 128,
  pattern: `^(?=[\\s\\S]*[A-Za-z])(?=[\\s\\S]*[0-9])${MULTI_LINE_CHARS}*$`,
  error: `Password must be ${PASSWORD_RULE}`,
});
/** A password as typed at login or to confirm a change: only bounded, never checked against the rules. */
export const GivenPassword = MultiLine({ maxLength: 128 });
export const Role = t.Union([t.Literal("user"), t.Literal("admin")]);
const Name = SingleLine({ maxLength: 255 });
const Bio = MultiLine({ maxLength: 5000 });
export const Uuid = t.String({ format: "uuid", error: "Must be a UUID" });
const DateTime = t.String({ format: "date-time", error: "Must be an ISO 8601 date-time, e.g. 2026-01-31T12:00:00Z" });

export const User = t.Object(
  {
    id: t.String({ format: "uuid" }),
    username: t.String(),
    email: t.String(),
    name: t.Nullable(t.String()),
    bio: t.Nullable(t.String()),
    role: Role,
    is_active: t.Boolean(),
    email_verified: t.Boolean({ description: "Whether the address was confirmed through a mailed link" }),
    created_at: t.String({ format: "date-time" }),
    updated_at: t.String({ format: "date-time" }),
  },
  { title: "User", description: "The user" },
);
export type PublicUser = typeof User.static;

export const RegisterBody = t.Object({ username: Username, email: Email, password: Password, name: t.Optional(Name) });
export const AdminCreateBody = t.Composite([RegisterBody, t.Object({ role: t.Optional(Role) })]);
export type NewAccount = typeof AdminCreateBody.static;

const ProfileFields = t.Object({
  username: t.Optional(Username),
  email: t.Optional(Email),
  name: t.Optional(t.Nullable(Name)),
  bio: t.Optional(t.Nullable(Bio)),
});
export const ProfilePatch = t.Composite([
  ProfileFields,
  // Required to change the email address.
  t.Object({ current_password: t.Optional(GivenPassword) }),
]);
export type ProfileChanges = typeof ProfilePatch.static;
export const AdminPatch = t.Composite([
  ProfileFields,
  t.Object({ role: t.Optional(Role), is_active: t.Optional(t.Boolean()) }),
]);
export type AdminChanges = typeof AdminPatch.static;

export const PasswordChange = t.Object({ current_password: GivenPassword, new_password: Password });
export const IdParams = t.Object({ id: Uuid });

const UserFilters = t.Object({
  q: t.Optional(SingleLine({ maxLength: 100, description: "Substring of username, email or name" })),
  role: t.Optional(Role),
  is_active: t.Optional(t.Boolean()),
  created_after: t.Optional(DateTime),
  created_before: t.Optional(DateTime),
});
export const UserListQuery = t.Composite([
  UserFilters,
  t.Object({
    // Bounded by what Postgres takes as an offset without overflowing into an error.
    offset: t.Integer({ minimum: 0, maximum: 2_147_483_647, default: 0 }),
    limit: t.Integer({ minimum: 1, maximum: 100, default: 20 }),
    sort: t.Union([t.Literal("created_at"), t.Literal("username"), t.Literal("email")], { default: "created_at" }),
    order: t.Union([t.Literal("asc"), t.Literal("desc")], { default: "desc" }),
  }),
]);
export const ExportQuery = t.Composite([
  UserFilters,
  t.Object({ format: t.Union([t.Literal("csv"), t.Literal("json")], { default: "csv" }) }),
]);
export const UserList = t.Object(
  { items: t.Array(User), total: t.Integer(), offset: t.Integer(), limit: t.Integer() },
  { title: "UserList", description: "One page of users, with the total of all matches" },
);

export type UserFilter = typeof UserFilters.static;
export type UserListParams = typeof UserListQuery.static;

export function toPublicUser(row: UserRow): PublicUser {
  return {
    id: row.id,
    username: row.username,
    email: row.email,
    name: row.name,
    bio: row.bio,
    role: row.role,
    is_active: row.isActive,
    email_verified: row.emailVerified,
    created_at: row.createdAt.toISOString(),
    updated_at: row.updatedAt.toISOString(),
  };
}
