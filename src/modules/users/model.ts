import { t } from "elysia";
import type { UserRow } from "../../db/schema";

const USERNAME_RULE = "3 to 50 characters: letters, digits, '_', '.' or '-'";
const PASSWORD_RULE = "8 to 128 characters with at least one letter and one digit";

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
  pattern: "^(?=.*[A-Za-z])(?=.*[0-9]).*$",
  error: `Password must be ${PASSWORD_RULE}`,
});
export const Role = t.Union([t.Literal("user"), t.Literal("admin")]);
const Name = t.String({ maxLength: 255 });
const Bio = t.String({ maxLength: 5000 });

export const User = t.Object(
  {
    id: t.String({ format: "uuid" }),
    username: t.String(),
    email: t.String(),
    name: t.Nullable(t.String()),
    bio: t.Nullable(t.String()),
    role: Role,
    is_active: t.Boolean(),
    created_at: t.String({ format: "date-time" }),
    updated_at: t.String({ format: "date-time" }),
  },
  { title: "User" },
);
export type PublicUser = typeof User.static;

export const RegisterBody = t.Object({ username: Username, email: Email, password: Password, name: t.Optional(Name) });
export const AdminCreateBody = t.Object({
  username: Username,
  email: Email,
  password: Password,
  name: t.Optional(Name),
  role: t.Optional(Role),
});
export const ProfilePatch = t.Object({
  username: t.Optional(Username),
  email: t.Optional(Email),
  name: t.Optional(t.Nullable(Name)),
  bio: t.Optional(t.Nullable(Bio)),
});
export const AdminPatch = t.Object({
  username: t.Optional(Username),
  email: t.Optional(Email),
  name: t.Optional(t.Nullable(Name)),
  bio: t.Optional(t.Nullable(Bio)),
  role: t.Optional(Role),
  is_active: t.Optional(t.Boolean()),
});
export const PasswordChange = t.Object({ current_password: t.String({ maxLength: 128 }), new_password: Password });

const UserFilters = t.Object({
  q: t.Optional(t.String({ maxLength: 100, description: "Substring of username, email or name" })),
  role: t.Optional(Role),
  is_active: t.Optional(t.Boolean()),
  created_after: t.Optional(t.String({ format: "date-time" })),
  created_before: t.Optional(t.String({ format: "date-time" })),
});
export const UserListQuery = t.Composite([
  UserFilters,
  t.Object({
    offset: t.Integer({ minimum: 0, default: 0 }),
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
  { title: "UserList" },
);

export type UserFilter = typeof UserFilters.static;
export type UserListParams = typeof UserListQuery.static;
export type ProfileChanges = typeof AdminPatch.static;

export function toPublicUser(row: UserRow): PublicUser {
  return {
    id: row.id,
    username: row.username,
    email: row.email,
    name: row.name,
    bio: row.bio,
    role: row.role,
    is_active: row.isActive,
    created_at: row.createdAt.toISOString(),
    updated_at: row.updatedAt.toISOString(),
  };
}
