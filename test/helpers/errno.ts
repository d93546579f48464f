import { constants } from 'node:os';

/** errno numbers by name, from Node's own table. */
export const ERRNO = constants.errno;
