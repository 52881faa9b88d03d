import { dlopen, FFIType, type Pointer, read } from "bun:ffi";
import { closeSync, ftruncateSync, mkdirSync, openSync, readFileSync, writeSync } from "node:fs";
import { join } from "node:path";

/** Another process has the data directory (the embedded database) open. */
export class DataDirInUseError extends Error {
  constructor(
    readonly dataDir: string,
    readonly owner: number | undefined,
  ) {
    super(
      `the embedded database in ${dataDir} is in use by process ${owner ?? "unknown"}; stop it first` +
        " (a running server makes backups itself: reviewpoint backup)",
    );
  }
}

/** The data directory cannot be made or written: a setting to fix, not a crash. */
export class DataDirUnusableError extends Error {}

/** The lock file inside DATA_DIR; a restore into an "empty" DATA_DIR finds it there. */
export const LOCK_FILE = "reviewpoint.lock";
const LOCK_EX = 2;
const LOCK_NB = 4;
const EWOULDBLOCK = 11;

let libc: ReturnType<typeof openLibc> | undefined;
function openLibc() {
  return dlopen("libc.so.6", {
    flock: { args: [FFIType.i32, FFIType.i32], returns: FFIType.i32 },
    __errno_location: { args: [], returns: FFIType.ptr },
  });
}

export interface DataDirLock {
  readonly dataDir: string;
  /** Closes the lock file, which releases the lock. */
  release(): void;
}

/**
 * Makes `dataDir` (owner-only) and takes the one lock that says which process uses it: an `flock` on
 * `reviewpoint.lock`, which the kernel drops with the process however it ends. A pid file was not
 * enough: a process killed with -9 stays a zombie for ~2 s, and `kill(pid, 0)` counts a zombie as alive,
 * so a restart right after a crash was refused. The file holds the owner's pid, for the message only.
 */
export function lockDataDir(dataDir: string): DataDirLock {
  let fd: number;
  try {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    fd = openSync(join(dataDir, LOCK_FILE), "a+", 0o600);
  } catch (error) {
    const { code, message } = error as NodeJS.ErrnoException;
    throw new DataDirUnusableError(`DATA_DIR ${dataDir} cannot be used: ${code ?? message}`);
  }
  libc ??= openLibc();
  if (libc.symbols.flock(fd, LOCK_EX | LOCK_NB) !== 0) {
    const errno = read.i32(libc.symbols.__errno_location() as Pointer, 0);
    const owner = Number.parseInt(readFileSync(join(dataDir, LOCK_FILE), "utf8"), 10);
    closeSync(fd);
    if (errno === EWOULDBLOCK) throw new DataDirInUseError(dataDir, Number.isNaN(owner) ? undefined : owner);
    throw new DataDirUnusableError(`DATA_DIR ${dataDir} cannot be locked (errno ${errno})`);
  }
  ftruncateSync(fd, 0);
  writeSync(fd, String(process.pid));
  let held = true;
  return {
    dataDir,
    release() {
      if (!held) return;
      held = false;
      closeSync(fd);
    },
  };
}

/** The running server's control socket (backups while it serves): inside the owner-only data directory. */
export const controlSocketPath = (dataDir: string) => join(dataDir, "control.sock");
