/**
 * The error model across the agent's socket: every error class the package
 * exports goes through the wire (toWireError, JSON, fromWireError) and comes
 * back the same class with the same code, errno, syscall, message and
 * fields; the class is chosen by one factory from the code (and operation),
 * never from a name the peer sent.
 */
import * as fs from 'node:fs';
import { constants } from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import * as lu from '../lib/index.js';
import { fromWireError, toWireError } from '../lib/agent/protocol.js';
import {
  AGENT_ERROR_CODES,
  createError,
  errorClassFor,
  errnoError,
  kernelErrors,
  kernelError,
  packageError,
  packageErrors,
  translateError,
  type ErrorContext,
  type Operation,
} from '../lib/errors.js';

const KERNEL_ERRORS = kernelErrors();
const PACKAGE_ERRORS = packageErrors();

type AnyErrorClass = abstract new (...args: never[]) => Error;

/** Every error class the package exports. */
const EXPORTED: AnyErrorClass[] = Object.values(lu).filter(
  (v): v is typeof lu.LiveUpdateError => typeof v === 'function' && (v === lu.LiveUpdateError || v.prototype instanceof lu.LiveUpdateError),
);

/** The bases no code selects: they are only ever met as one of their subclasses. */
const BASES: AnyErrorClass[] = [lu.FdPassError, lu.AgentError];

/** A context with every field set, so that the round trip must carry each. */
function fullContext(operation: Operation): ErrorContext {
  return {
    operation,
    sessionName: 'vm-42',
    token: 2n ** 64n - 1n,
    fd: 7,
    path: '/run/liveupdate/agent.sock',
    hint: 'a reason',
    fix: 'do this',
    closedFds: 3,
    length: 90_716,
    details: { checks: [{ name: 'liveupdate-on', ok: false, detail: 'liveupdate=(absent)' }], notReady: [{ id: 4, pid: 99, uid: 1000 }], version: [2, 1] },
  };
}

/** An error of `type` made the way the package makes it: the factory, from a code that selects the class. */
function instanceOf(type: AnyErrorClass): lu.LiveUpdateError {
  const pkg = PACKAGE_ERRORS.find((r) => r.type === type);
  if (pkg !== undefined) return packageError(pkg.code, 'what happened', fullContext('agent.sessions'));
  for (const rule of KERNEL_ERRORS) {
    if (rule.type !== type) continue;
    const operation = rule.operations === '*' ? 'getName' : (rule.operations[0] as Operation);
    const code = rule.codes === '*' ? 'EXDEV' : (rule.codes[0] as string);
    const made = kernelError({ errno: -constants.errno[code as keyof typeof constants.errno], code, syscall: 'ioctl' }, fullContext(operation));
    if (made.constructor === type) return made;
  }
  throw new Error(`no code selects ${type.name}`);
}

/** What must survive the wire. */
function fields(error: Error): Record<string, unknown> {
  const e = error as lu.LiveUpdateError & Record<string, unknown>;
  return {
    constructor: e.constructor,
    name: e.name,
    code: e.code,
    errno: e.errno,
    syscall: e.syscall,
    message: e.message,
    operation: e.operation,
    sessionName: e.sessionName,
    token: e.token,
    fd: e.fd,
    path: e.path,
    fix: e.fix,
    details: e['details'],
    reason: e['reason'],
    closedFds: e['closedFds'],
    length: e['length'],
  };
}

function overTheWire(error: unknown): Error {
  return fromWireError(JSON.parse(JSON.stringify(toWireError(error, 'agent.sessions'))), 'agent.sessions');
}

describe('every exported error class, over the wire', () => {
  const classes = EXPORTED.filter((c) => !BASES.includes(c));

  it('the package exports the classes this test expects', () => {
    expect(classes.length).toBeGreaterThanOrEqual(45);
    expect(classes).toContain(lu.FramingError);
    expect(classes).toContain(lu.AgentTimeoutError);
  });

  it.each(classes.map((c) => [c.name, c] as const))('%s comes back the same class with the same code, errno, syscall, message and fields', (_name, type) => {
    const original = instanceOf(type);
    expect(original.constructor).toBe(type);
    const rebuilt = overTheWire(original);
    expect(rebuilt).toBeInstanceOf(type);
    expect(fields(rebuilt)).toEqual(fields(original));
  });

  it('the bases are never made: no code selects them', () => {
    const selected = new Set<unknown>([...PACKAGE_ERRORS.map((r) => r.type), ...KERNEL_ERRORS.map((r) => r.type)]);
    for (const base of BASES) expect(selected.has(base), base.name).toBe(false);
  });

  it('an FdPassError keeps its code (it was rebuilt with a constructor of other arguments: code "EEXIST: ...")', () => {
    const error = packageError('ERR_LIVEUPDATE_BAD_FRAME', 'the stream does not carry frames', { operation: 'recvFds', closedFds: 2 });
    const rebuilt = overTheWire(error) as lu.FramingError;
    expect(rebuilt).toBeInstanceOf(lu.FramingError);
    expect(rebuilt.code).toBe('ERR_LIVEUPDATE_BAD_FRAME');
    expect(rebuilt.closedFds).toBe(2);
    expect(rebuilt.message).toBe('ERR_LIVEUPDATE_BAD_FRAME: the stream does not carry frames');
  });

  it("Node's argument errors come back as TypeError/RangeError with their code", () => {
    for (const [type, code] of [
      [TypeError, 'ERR_INVALID_ARG_VALUE'],
      [TypeError, 'ERR_INVALID_ARG_TYPE'],
      [RangeError, 'ERR_OUT_OF_RANGE'],
    ] as const) {
      const original = Object.assign(new type('The argument is bad'), { code });
      const rebuilt = overTheWire(original);
      expect(rebuilt.constructor).toBe(type);
      expect(rebuilt).toMatchObject({ code, message: 'The argument is bad' });
    }
  });
});

describe('one factory: a code and its class cannot disagree', () => {
  it('each package code has one row, and the factory gives its class', () => {
    const codes = PACKAGE_ERRORS.map((r) => r.code);
    expect(new Set(codes).size).toBe(codes.length);
    for (const rule of PACKAGE_ERRORS) expect(errorClassFor(rule.code, 'agent.sessions'), rule.code).toBe(rule.type);
    for (const code of Object.keys(AGENT_ERROR_CODES)) expect(codes).toContain(code);
  });

  it('every ERR_* code anywhere in lib/ (the agent included) is documented in the package table', () => {
    const files = (fs.readdirSync(path.join(__dirname, '..', 'lib'), { recursive: true }) as string[]).filter((f) => f.endsWith('.ts') && f !== 'errors.ts');
    const listed = new Set(PACKAGE_ERRORS.map((r) => r.code));
    // cli.ts's UsageError never leaves main(): it becomes exit status 2.
    const raised = new Set(files.flatMap((f) => fs.readFileSync(path.join(__dirname, '..', 'lib', f), 'utf8').match(/ERR_LIVEUPDATE_[A-Z_]+/g) ?? []));
    raised.delete('ERR_LIVEUPDATE_USAGE');
    expect([...raised].filter((c) => !listed.has(c))).toEqual([]);
  });

  it('the class comes from the code and operation, not from the class name the peer sent', () => {
    const forged = { class: 'SessionExistsError', code: 'ENOENT', errno: -2, syscall: 'ioctl', message: 'ENOENT: x', operation: 'retrieveSession' };
    expect(fromWireError(forged, 'agent.retrieveSession')).toBeInstanceOf(lu.SessionNotFoundError);
    const unknown = { class: 'Function', code: 'ERR_LIVEUPDATE_FROM_THE_FUTURE', message: 'ERR_LIVEUPDATE_FROM_THE_FUTURE: x' };
    expect(fromWireError(unknown, 'agent.sessions').constructor).toBe(lu.LiveUpdateError);
    // An operation the client does not know is replaced by the request's own.
    expect(fromWireError({ ...forged, operation: 'constructor' }, 'agent.attach')).toMatchObject({ constructor: lu.SessionNotFoundError, operation: 'agent.attach' });
  });

  it('garbage for an error is a protocol error, not a crash', () => {
    for (const wire of [null, 5, 'x', [], {}, { code: 1, message: 'x' }, { code: 'E', message: 2 }]) {
      expect(fromWireError(wire, 'agent.sessions')).toBeInstanceOf(lu.AgentProtocolError);
    }
    // Fields of the wrong type are dropped, not trusted.
    const odd = fromWireError({ code: 'EEXIST', message: 'm', errno: 'x', token: '12abc', fd: 'seven', details: 5, operation: 'createSession' }, 'agent.createSession') as lu.LiveUpdateError;
    expect(odd).toMatchObject({ constructor: lu.SessionExistsError, errno: undefined, token: undefined, fd: undefined });
  });

  it('an error the agent did not foresee travels as AgentInternalError with a documented code, not the undocumented ERR_LIVEUPDATE_AGENT', () => {
    const wire = toWireError(new Error('internal: an outgoing entry without a session'), 'agent.attach');
    expect(wire.code).toBe('ERR_LIVEUPDATE_AGENT_INTERNAL');
    expect(PACKAGE_ERRORS.map((r) => r.code)).toContain(wire.code);
    const rebuilt = fromWireError(JSON.parse(JSON.stringify(wire)), 'agent.attach');
    expect(rebuilt).toMatchObject({ constructor: lu.AgentInternalError, errno: -5, syscall: 'agent', message: 'ERR_LIVEUPDATE_AGENT_INTERNAL: internal: an outgoing entry without a session' });
    // A TypeError without a code is a fault too, not an argument error.
    expect(toWireError(new TypeError('x is undefined'), 'agent.attach').code).toBe('ERR_LIVEUPDATE_AGENT_INTERNAL');
  });

  it('a raw system error thrown in the agent travels typed, with its errno and syscall', () => {
    const raw = Object.assign(new Error('EMFILE: too many open files, accept'), { errno: -24, code: 'EMFILE', syscall: 'accept' });
    const rebuilt = overTheWire(raw) as lu.LiveUpdateError;
    expect(rebuilt).toMatchObject({ constructor: lu.LiveUpdateError, code: 'EMFILE', errno: -24, syscall: 'accept', operation: 'agent.sessions' });
  });

  it('createError makes argument errors as Node does', () => {
    expect(createError('ERR_OUT_OF_RANGE', 'm', { operation: 'preserve' })).toMatchObject({ constructor: RangeError, code: 'ERR_OUT_OF_RANGE' });
  });
});

describe('agent error details, typed per code', () => {
  it('UpdateRefusedError always has checks and notReady, checked item by item', () => {
    const error = packageError('ERR_LIVEUPDATE_UPDATE_REFUSED', 'refused', { operation: 'agent.update', details: { checks: [{ name: 'device-owned', ok: false }, { name: 3 }], notReady: 'no' } }) as lu.UpdateRefusedError;
    expect(error.details).toEqual({ checks: [{ name: 'device-owned', ok: false }], notReady: [] });
    const bare = packageError('ERR_LIVEUPDATE_UPDATE_REFUSED', 'another update is in progress', { operation: 'agent.update' }) as lu.UpdateRefusedError;
    expect(bare.details).toEqual({ checks: [], notReady: [] });
  });

  it('ManifestVersionError has the version of a newer manifest; the other agent errors have none', () => {
    const newer = packageError('ERR_LIVEUPDATE_MANIFEST_VERSION', 'newer', { operation: 'agent.start', details: { version: [2, 0] } }) as lu.ManifestVersionError;
    expect(newer.details).toEqual({ version: [2, 0] });
    const quota = packageError('ERR_LIVEUPDATE_AGENT_QUOTA', 'over', { operation: 'agent.createSession', details: { anything: 1 } }) as lu.AgentQuotaError;
    expect(quota.details).toBeUndefined();
  });
});

describe("Agent.start's errors: typed, with the errno the refused syscall would have given", () => {
  it('another agent listening, or a path that is not a socket: AgentListenError EADDRINUSE, bind', () => {
    const error = errnoError('EADDRINUSE', 'bind', { operation: 'agent.start', path: '/run/liveupdate/agent.sock', hint: 'another agent is listening on it', fix: 'stop that agent, or give this one another --socket' });
    expect(error).toMatchObject({ constructor: lu.AgentListenError, code: 'EADDRINUSE', errno: -98, syscall: 'bind', operation: 'agent.start', path: '/run/liveupdate/agent.sock' });
    expect(error.message).toBe(
      "EADDRINUSE: the agent cannot listen at /run/liveupdate/agent.sock: address already in use, bind '/run/liveupdate/agent.sock'. Another agent is listening on it. Fix: stop that agent, or give this one another --socket",
    );
  });

  it('a raw failure of a syscall at start (bind EACCES) is typed the same way', () => {
    const raw = Object.assign(new Error('EACCES: permission denied, bind'), { errno: -13, code: 'EACCES', syscall: 'bind' });
    expect(translateError(raw, { operation: 'agent.start', path: '/x/agent.sock' })).toMatchObject({ constructor: lu.AgentListenError, code: 'EACCES', errno: -13, syscall: 'bind', cause: raw });
  });
});
