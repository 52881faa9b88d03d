import { Elysia } from "elysia";
import type { Role } from "../db/schema";
import type { Claims } from "../modules/auth/tokens";
import type { PublicUser } from "../modules/users/model";
import { errors } from "./errors";

export type Permission = "users:read" | "users:write" | "files:read" | "files:write" | "files:delete";

/** `user` acts on its own profile and files only (checked in the services); `admin` holds every permission. */
const ROLE_PERMISSIONS: Record<Role, ReadonlySet<Permission>> = {
  user: new Set(),
  admin: new Set(["users:read", "users:write", "files:read", "files:write", "files:delete"]),
};

const hasPermission = (role: Role, permission: Permission) => ROLE_PERMISSIONS[role].has(permission);

export interface Principal {
  user: PublicUser;
  claims: Claims;
}

export interface AuthRequirement {
  role?: Role;
  permission?: Permission;
}

export const requireAuth: AuthRequirement = {};
export const requireRole = (role: Role): AuthRequirement => ({ role });
export const requirePermission = (permission: Permission): AuthRequirement => ({ permission });

/** Security requirement for the OpenAPI document: a bearer token, or the docs' OAuth2 password flow. */
export const BEARER_SECURITY: Record<string, string[]>[] = [{ bearerAuth: [] }, { OAuth2PasswordBearer: [] }];

/**
 * The `auth` route option: `{ auth: requireRole("admin") }` authenticates the bearer token,
 * loads the current user (so deactivation and role changes apply on the very next request)
 * and checks the requirement, exposing `principal` to the handler.
 */
export function authGuard(authenticate: (authorization: string | undefined) => Promise<Principal>) {
  return new Elysia({ name: "auth-guard" }).macro({
    auth: (requirement: AuthRequirement) => ({
      // Read from the request itself: in the compiled binary Elysia's static analysis misses `headers` here.
      async resolve({ request }) {
        const principal = await authenticate(request.headers.get("authorization") ?? undefined);
        const { role } = principal.user;
        if (requirement.role && role !== requirement.role) throw errors.forbidden();
        if (requirement.permission && !hasPermission(role, requirement.permission)) throw errors.forbidden();
        return { principal };
      },
    }),
  });
}

export type AuthGuard = ReturnType<typeof authGuard>;
