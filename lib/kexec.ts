/**
 * kexec: load the next kernel with kexec_file_load and jump into it with
 * reboot(LINUX_REBOOT_CMD_KEXEC). With LUO, that jump is the live update:
 * the kernel freezes every preserved file and hands it to the next kernel.
 */
import { callAsync, callSync, packageError, translateError, type ErrorContext, type KexecError } from './errors.js';
import { closeFd, native } from './native.js';
import { checkBoolean, checkOptions, checkPath, invalidArgType, invalidArgValue } from './validate.js';

/** What to load. */
export interface LoadOptions {
  /** Path of the kernel image (bzImage). */
  kernel: string;
  /** Path of the initramfs, if any. */
  initrd?: string;
  /** The next kernel's command line; keep `liveupdate=on` in it to retrieve sessions there. */
  cmdline: string;
}

/** Options for {@link execute}. */
export interface ExecuteOptions {
  /** Flush filesystem buffers before the jump (default true; the jump does not). */
  sync?: boolean;
}

interface Load {
  kernel: string;
  initrd: string | null;
  cmdline: string;
}

function checkLoad(options: unknown): Load {
  if (options === null || typeof options !== 'object') throw invalidArgType('options', 'of type object', options);
  const opts = options as Partial<LoadOptions>;
  const kernel = checkPath(opts.kernel, 'options.kernel');
  const initrd = opts.initrd === undefined ? null : checkPath(opts.initrd, 'options.initrd');
  if (typeof opts.cmdline !== 'string') throw invalidArgType('options.cmdline', 'of type string', opts.cmdline);
  if (opts.cmdline.includes('\0')) throw invalidArgValue('options.cmdline', 'must not contain a NUL character', opts.cmdline);
  return { kernel, initrd, cmdline: opts.cmdline };
}

/** The typed error of an image's open, naming its path; EINVAL says why it was refused. */
function imageError(path: string, error: unknown): unknown {
  const notRegular = (error as { code?: unknown }).code === 'EINVAL';
  const hint = notRegular ? 'It is not a regular file (a FIFO, device or directory), which kexec_file_load refuses as well: checked before any read, so that nothing blocks' : undefined;
  return translateError(error, { operation: 'kexec.load', path, hint });
}

/*
 * The images are opened one by one, so that an error names the file it is
 * about, without waiting and only if they are regular files (native
 * kexec_open_image): a FIFO given as the kernel would otherwise block the
 * open until someone wrote to it, and with it the update.
 */
function openImageSync(path: string): number {
  try {
    return native.kexecOpenImage(path);
  } catch (error) {
    throw imageError(path, error);
  }
}

async function openImage(path: string): Promise<number> {
  try {
    return await native.kexecOpenImageAsync(path);
  } catch (error) {
    throw imageError(path, error);
  }
}

function closeImages(kernel: number, initrd: number | null): void {
  closeFd(kernel, 'kexec.load');
  if (initrd !== null) closeFd(initrd, 'kexec.load');
}

/**
 * Loads `kernel` (and `initrd`) as the kernel to kexec into. Replaces any
 * image loaded before. Needs CAP_SYS_BOOT. A path that is not a regular
 * file is refused with a KexecImageRejectedError (`EINVAL`, `path`
 * the file) before anything is read from it; any other file goes to the
 * kernel, which judges it. For a live update, `kernel.preflight()` first
 * says whether the image is a bzImage and can take the handover.
 */
export async function load(options: LoadOptions): Promise<void> {
  const l = checkLoad(options);
  const kernel = await openImage(l.kernel);
  let initrd: number | null = null;
  try {
    if (l.initrd !== null) initrd = await openImage(l.initrd);
    await callAsync({ operation: 'kexec.load', path: l.kernel }, () => native.kexecLoadAsync(kernel, initrd, l.cmdline));
  } finally {
    closeImages(kernel, initrd);
  }
}

/** The synchronous form of {@link load}. */
export function loadSync(options: LoadOptions): void {
  const l = checkLoad(options);
  const kernel = openImageSync(l.kernel);
  let initrd: number | null = null;
  try {
    if (l.initrd !== null) initrd = openImageSync(l.initrd);
    callSync({ operation: 'kexec.load', path: l.kernel }, () => native.kexecLoad(kernel, initrd, l.cmdline));
  } finally {
    closeImages(kernel, initrd);
  }
}

/** Forgets the loaded kernel, if any. */
export async function unload(): Promise<void> {
  await callAsync({ operation: 'kexec.unload' }, () => native.kexecUnloadAsync());
}

/** The synchronous form of {@link unload}. */
export function unloadSync(): void {
  callSync({ operation: 'kexec.unload' }, () => native.kexecUnload());
}

const LOADED_CONTEXT: ErrorContext = { operation: 'kexec.isLoaded', path: '/sys/kernel/kexec_loaded' };

/**
 * Whether a kernel is loaded (/sys/kernel/kexec_loaded). False where the
 * kernel has no kexec at all: nothing can be loaded there (status() says
 * whether kexec_file_load exists, in `kexecFile`).
 */
export async function isLoaded(): Promise<boolean> {
  return (await callAsync(LOADED_CONTEXT, () => native.kexecLoadedAsync())) === 1;
}

/** The synchronous form of {@link isLoaded}. */
export function isLoadedSync(): boolean {
  return callSync(LOADED_CONTEXT, () => native.kexecLoaded()) === 1;
}

/** Whether this kernel can load a kernel with {@link load}, and if not, why. */
export interface KexecFileSupport {
  /** True if kexec_file_load exists and may be called; false if not; null if that cannot be told. */
  available: boolean | null;
  /** Why not, or why it cannot be told; null when available. */
  reason: string | null;
}

/**
 * Asks the kernel whether kexec_file_load exists, with a call that loads and
 * unloads nothing (an invalid flag, refused with EINVAL after the permission
 * check where the syscall exists; ENOSYS where it does not).
 */
export function supportSync(): KexecFileSupport {
  try {
    native.kexecFileProbe();
    return { available: true, reason: null };
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    if (code === 'ENOSYS') return { available: false, reason: 'this kernel has no kexec_file_load (built without CONFIG_KEXEC_FILE)' };
    if (code === 'EPERM') return { available: null, reason: 'not permitted to call kexec_file_load (needs CAP_SYS_BOOT, and kexec_load_disabled 0)' };
    return { available: null, reason: (error as Error).message };
  }
}

/** The Promise form of {@link supportSync}. */
export async function support(): Promise<KexecFileSupport> {
  return supportSync();
}

function returned(): KexecError {
  return packageError('ERR_LIVEUPDATE_KEXEC_RETURNED', 'reboot(LINUX_REBOOT_CMD_KEXEC) returned without an error', { operation: 'kexec.execute' }) as KexecError;
}

function checkExecute(options: unknown): boolean {
  return checkBoolean(checkOptions<ExecuteOptions>(options).sync, 'options.sync', true);
}

/**
 * Jumps into the loaded kernel: this process, and every other, ends here.
 * Returns only by throwing: KexecNotLoadedError when nothing is loaded,
 * KexecUnsupportedError where the kernel has no kexec at all,
 * LiveUpdateAbortedError when the kernel refused and rolled the live update
 * back (for example a preserved file failed to freeze).
 */
export async function execute(options?: ExecuteOptions): Promise<never> {
  const sync = checkExecute(options);
  await callAsync({ operation: 'kexec.execute' }, () => native.kexecExecuteAsync(sync));
  throw returned();
}

/** The synchronous form of {@link execute}. */
export function executeSync(options?: ExecuteOptions): never {
  const sync = checkExecute(options);
  callSync({ operation: 'kexec.execute' }, () => native.kexecExecute(sync));
  throw returned();
}
