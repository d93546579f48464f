/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * luo_test.h - the controls of the test-only LUO file handler
 * (CONFIG_LIVEUPDATE_TEST_HANDLER), shared by the kernel side and the
 * guest's control program.
 *
 * Every open of /dev/luo_test is a file the handler can preserve. Ioctls on
 * that file choose which of its callbacks fails, and with which errno. The
 * calls the kernel made to the handler are listed, in order, in debugfs:
 * luo_test/calls (this kernel) and luo_test/previous (the kernel before the
 * kexec, up to the moment of the jump). /proc/self/fdinfo/N of such a file
 * shows its id, the number those lists name it by.
 */
#ifndef _UAPI_LUO_TEST_H
#define _UAPI_LUO_TEST_H

#include <linux/ioctl.h>
#include <linux/types.h>

/* The handler's compatible string: what the next kernel must know to deserialize. */
#define LUO_TEST_COMPATIBLE "luo-test-v1"

/* The callbacks a test can make fail (LUO_TEST_SET_FAULT's op). */
enum luo_test_op {
	LUO_TEST_OP_PRESERVE = 0,
	LUO_TEST_OP_FREEZE = 1,
	LUO_TEST_OP_RETRIEVE = 2,
	LUO_TEST_OP_CAN_FINISH = 3,
	LUO_TEST_NR_FAULT_OPS = 4,
};

/**
 * struct luo_test_fault - makes one callback of this file fail.
 * @size:  sizeof(struct luo_test_fault).
 * @op:    an enum luo_test_op.
 * @error: the positive errno the callback fails with; 0 clears the fault.
 *         can_finish can only say no (LUO then answers EBUSY): any non-zero
 *         value makes it say no. retrieve and can_finish faults travel with
 *         the file to the next kernel; a retrieve error must be below 4096.
 */
struct luo_test_fault {
	__u32 size;
	__u32 op;
	__s32 error;
	__u32 reserved;
};

#define LUO_TEST_IOCTL_TYPE 0xBB
#define LUO_TEST_SET_FAULT _IOW(LUO_TEST_IOCTL_TYPE, 0x00, struct luo_test_fault)
/* Clears every fault of this file. */
#define LUO_TEST_CLEAR_FAULTS _IO(LUO_TEST_IOCTL_TYPE, 0x01)

#endif /* _UAPI_LUO_TEST_H */
