/**
 * Reading a /proc/PID/stat (or task) line, where the test bed and the
 * benchmark read a process's parent, start time or CPU times.
 */

/**
 * The fields of a stat line from the third (the state) on: index 0 is field
 * 3, index 1 the parent pid (field 4), index 11 and 12 utime and stime
 * (fields 14 and 15), index 19 the start time (field 22). The command name
 * before them may hold spaces and parentheses, so they are read after its
 * last ')'.
 */
export function statFields(stat: string): string[] {
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}
