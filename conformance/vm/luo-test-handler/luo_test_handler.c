// SPDX-License-Identifier: GPL-2.0
/*
 * luo_test_handler.c - a LUO file handler for tests only.
 *
 * memfd never fails a freeze, never refuses to finish and never fails a
 * retrieve, so the kernel paths that handle those failures cannot be reached
 * with it. This handler makes every open of /dev/luo_test a preservable file
 * whose callbacks fail on request (see luo_test.h), records every call the
 * kernel makes to it, and hands that record to the next kernel, so a test
 * can see the freezes that happened during the jump.
 *
 * The boot parameter luo_test.register=0 leaves the handler unregistered: a
 * kernel that cannot deserialize the files preserved by the previous one.
 */
#define pr_fmt(fmt) "luo_test: " fmt

#include <linux/anon_inodes.h>
#include <linux/bitfield.h>
#include <linux/debugfs.h>
#include <linux/err.h>
#include <linux/fs.h>
#include <linux/init.h>
#include <linux/io.h>
#include <linux/kexec_handover.h>
#include <linux/liveupdate.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/uaccess.h>

#include "luo_test.h"

/* Parameters are luo_test.NAME, whatever the file is called. */
#undef MODULE_PARAM_PREFIX
#define MODULE_PARAM_PREFIX "luo_test."

static bool register_handler = true;
module_param_named(register, register_handler, bool, 0444);
MODULE_PARM_DESC(register, "Register the test file handler (default 1)");

/* The calls recorded, in the order the kernel made them. */
enum luo_test_call_op {
	CALL_PRESERVE,
	CALL_UNPRESERVE,
	CALL_FREEZE,
	CALL_UNFREEZE,
	CALL_RETRIEVE,
	CALL_CAN_FINISH,
	CALL_FINISH,
	CALL_NR_OPS,
};

static const char *const call_names[CALL_NR_OPS] = {
	[CALL_PRESERVE] = "preserve",
	[CALL_UNPRESERVE] = "unpreserve",
	[CALL_FREEZE] = "freeze",
	[CALL_UNFREEZE] = "unfreeze",
	[CALL_RETRIEVE] = "retrieve",
	[CALL_CAN_FINISH] = "can_finish",
	[CALL_FINISH] = "finish",
};

struct luo_test_call {
	u32 op;
	s32 result;	/* 0, or the negative errno returned; can_finish: -EBUSY for no */
	u64 id;
};

/*
 * The call log lives in KHO-preserved memory named by a KHO subtree: calls
 * made up to the jump (the freezes of a kexec that succeeds) are in it when
 * the next kernel starts. next_id carries over too, so a retrieved file
 * keeps an id no new file of the next kernel takes.
 */
#define LOG_BYTES (16 * 1024)
#define LOG_SUBTREE "luo-test-log"
struct luo_test_log {
	u64 next_id;
	u32 count;
	u32 lost;
	struct luo_test_call calls[];
};
#define LOG_CAPACITY ((LOG_BYTES - sizeof(struct luo_test_log)) / sizeof(struct luo_test_call))

static struct luo_test_log *call_log;
static struct luo_test_log *previous_log;
static DEFINE_SPINLOCK(log_lock);

static void log_call(enum luo_test_call_op op, u64 id, int result)
{
	guard(spinlock)(&log_lock);
	if (call_log->count >= LOG_CAPACITY) {
		call_log->lost++;
		return;
	}
	call_log->calls[call_log->count++] = (struct luo_test_call){
		.op = op, .result = result, .id = id,
	};
}

static u64 new_id(void)
{
	guard(spinlock)(&log_lock);
	return call_log->next_id++;
}

/* One file's state: its id, and the errno each callback is to fail with. */
struct luo_test_file {
	u64 id;
	int fault[LUO_TEST_NR_FAULT_OPS];
};

/*
 * The u64 LUO carries to the next kernel: the id (low 32 bits), the retrieve
 * errno (12 bits) and whether can_finish says no (1 bit).
 */
#define SER_ID_MASK GENMASK_ULL(31, 0)
#define SER_RETRIEVE_MASK GENMASK_ULL(43, 32)
#define SER_CAN_FINISH_NO BIT_ULL(44)

static u64 serialized_data_of(const struct luo_test_file *state)
{
	u64 data = FIELD_PREP(SER_ID_MASK, state->id) |
		   FIELD_PREP(SER_RETRIEVE_MASK, state->fault[LUO_TEST_OP_RETRIEVE]);

	if (state->fault[LUO_TEST_OP_CAN_FINISH])
		data |= SER_CAN_FINISH_NO;
	return data;
}

static u64 serialized_id(u64 data)
{
	return FIELD_GET(SER_ID_MASK, data);
}

static const struct file_operations luo_test_fops;

static struct luo_test_file *state_of(struct file *file)
{
	return file->private_data;
}

static long luo_test_set_fault(struct luo_test_file *state, void __user *uarg)
{
	struct luo_test_fault fault;
	u32 size;
	int err;

	if (get_user(size, (u32 __user *)uarg))
		return -EFAULT;
	if (size < sizeof(fault))
		return -EINVAL;
	err = copy_struct_from_user(&fault, sizeof(fault), uarg, size);
	if (err)
		return err;
	if (fault.reserved || fault.op >= LUO_TEST_NR_FAULT_OPS)
		return -EINVAL;
	if (fault.error < 0 || fault.error >= MAX_ERRNO)
		return -EINVAL;
	WRITE_ONCE(state->fault[fault.op], fault.error);
	return 0;
}

static long luo_test_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct luo_test_file *state = state_of(file);
	int op;

	switch (cmd) {
	case LUO_TEST_SET_FAULT:
		return luo_test_set_fault(state, (void __user *)arg);
	case LUO_TEST_CLEAR_FAULTS:
		for (op = 0; op < LUO_TEST_NR_FAULT_OPS; op++)
			WRITE_ONCE(state->fault[op], 0);
		return 0;
	default:
		return -ENOTTY;
	}
}

static void luo_test_show_fdinfo(struct seq_file *m, struct file *file)
{
	struct luo_test_file *state = state_of(file);

	seq_printf(m, "luo_test_id:\t%llu\n", state->id);
	seq_printf(m, "luo_test_faults:\tpreserve=%d freeze=%d retrieve=%d can_finish=%d\n",
		   READ_ONCE(state->fault[LUO_TEST_OP_PRESERVE]),
		   READ_ONCE(state->fault[LUO_TEST_OP_FREEZE]),
		   READ_ONCE(state->fault[LUO_TEST_OP_RETRIEVE]),
		   READ_ONCE(state->fault[LUO_TEST_OP_CAN_FINISH]));
}

static struct luo_test_file *new_state(u64 id)
{
	struct luo_test_file *state = kzalloc(sizeof(*state), GFP_KERNEL);

	if (state)
		state->id = id;
	return state;
}

static int luo_test_open(struct inode *inode, struct file *file)
{
	struct luo_test_file *state = new_state(new_id());

	if (!state)
		return -ENOMEM;
	file->private_data = state;
	return 0;
}

static int luo_test_release(struct inode *inode, struct file *file)
{
	kfree(file->private_data);
	return 0;
}

static const struct file_operations luo_test_fops = {
	.owner = THIS_MODULE,
	.open = luo_test_open,
	.release = luo_test_release,
	.unlocked_ioctl = luo_test_ioctl,
	.show_fdinfo = luo_test_show_fdinfo,
};

static struct miscdevice luo_test_device = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "luo_test",
	.fops = &luo_test_fops,
	.mode = 0600,
};

/* The handler's callbacks: each records its call, then fails if asked to. */

static bool luo_test_can_preserve(struct liveupdate_file_handler *handler, struct file *file)
{
	return file->f_op == &luo_test_fops;
}

static int luo_test_preserve(struct liveupdate_file_op_args *args)
{
	struct luo_test_file *state = state_of(args->file);
	int err = -READ_ONCE(state->fault[LUO_TEST_OP_PRESERVE]);

	if (!err)
		args->serialized_data = serialized_data_of(state);
	log_call(CALL_PRESERVE, state->id, err);
	return err;
}

static void luo_test_unpreserve(struct liveupdate_file_op_args *args)
{
	log_call(CALL_UNPRESERVE, state_of(args->file)->id, 0);
}

static int luo_test_freeze(struct liveupdate_file_op_args *args)
{
	struct luo_test_file *state = state_of(args->file);
	int err = -READ_ONCE(state->fault[LUO_TEST_OP_FREEZE]);

	/* Faults set after the preserve travel too: serialize them now. */
	if (!err)
		args->serialized_data = serialized_data_of(state);
	log_call(CALL_FREEZE, state->id, err);
	return err;
}

static void luo_test_unfreeze(struct liveupdate_file_op_args *args)
{
	log_call(CALL_UNFREEZE, state_of(args->file)->id, 0);
}

static int luo_test_retrieve(struct liveupdate_file_op_args *args)
{
	u64 data = args->serialized_data;
	u64 id = serialized_id(data);
	int err = -(int)FIELD_GET(SER_RETRIEVE_MASK, data);
	struct luo_test_file *state;
	struct file *file;

	if (err)
		goto out;
	state = new_state(id);
	if (!state) {
		err = -ENOMEM;
		goto out;
	}
	if (data & SER_CAN_FINISH_NO)
		state->fault[LUO_TEST_OP_CAN_FINISH] = EBUSY;
	file = anon_inode_getfile("[luo_test]", &luo_test_fops, state, O_RDWR);
	if (IS_ERR(file)) {
		kfree(state);
		err = PTR_ERR(file);
		goto out;
	}
	args->file = file;
out:
	log_call(CALL_RETRIEVE, id, err);
	return err;
}

static bool luo_test_can_finish(struct liveupdate_file_op_args *args)
{
	u64 id = serialized_id(args->serialized_data);
	bool no;

	/* A retrieved file says what its fault is now; an unretrieved one what it carried. */
	if (args->file)
		no = READ_ONCE(state_of(args->file)->fault[LUO_TEST_OP_CAN_FINISH]);
	else
		no = args->serialized_data & SER_CAN_FINISH_NO;
	log_call(CALL_CAN_FINISH, id, no ? -EBUSY : 0);
	return !no;
}

static void luo_test_finish(struct liveupdate_file_op_args *args)
{
	log_call(CALL_FINISH, serialized_id(args->serialized_data), 0);
}

static const struct liveupdate_file_ops luo_test_file_ops = {
	.can_preserve = luo_test_can_preserve,
	.preserve = luo_test_preserve,
	.unpreserve = luo_test_unpreserve,
	.freeze = luo_test_freeze,
	.unfreeze = luo_test_unfreeze,
	.retrieve = luo_test_retrieve,
	.can_finish = luo_test_can_finish,
	.finish = luo_test_finish,
	.owner = THIS_MODULE,
};

static struct liveupdate_file_handler luo_test_handler = {
	.ops = &luo_test_file_ops,
	.compatible = LUO_TEST_COMPATIBLE,
};

/* debugfs: luo_test/calls and luo_test/previous, one call per line: "op id result". */

static void show_log(struct seq_file *m, const struct luo_test_log *log)
{
	u32 i, count;

	if (!log)
		return;
	scoped_guard(spinlock, &log_lock)
		count = log->count;
	for (i = 0; i < count; i++) {
		const struct luo_test_call *call = &log->calls[i];
		const char *name = call->op < CALL_NR_OPS ? call_names[call->op] : "?";

		seq_printf(m, "%s %llu %d\n", name, call->id, call->result);
	}
	if (log->lost)
		seq_printf(m, "lost %u 0\n", log->lost);
}

static int calls_show(struct seq_file *m, void *unused)
{
	show_log(m, call_log);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(calls);

static int previous_show(struct seq_file *m, void *unused)
{
	show_log(m, previous_log);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(previous);

/* The previous kernel's log, copied out of its preserved memory, if there was one. */
static void __init take_previous_log(void)
{
	struct luo_test_log *log;
	phys_addr_t phys;
	size_t size;

	if (kho_retrieve_subtree(LOG_SUBTREE, &phys, &size) || size != LOG_BYTES)
		return;
	log = phys_to_virt(phys);
	if (log->count <= LOG_CAPACITY)
		previous_log = kmemdup(log, LOG_BYTES, GFP_KERNEL);
	kho_restore_free(log);
}

/* This kernel's log: preserved for the next kernel when KHO is on, plain memory otherwise. */
static int __init make_call_log(void)
{
	struct luo_test_log *log = kho_is_enabled() ? kho_alloc_preserve(LOG_BYTES) : NULL;

	if (IS_ERR_OR_NULL(log)) {
		log = kzalloc(LOG_BYTES, GFP_KERNEL);
		if (!log)
			return -ENOMEM;
	} else if (kho_add_subtree(LOG_SUBTREE, log, LOG_BYTES)) {
		pr_warn("the call log will not reach the next kernel\n");
	}
	log->next_id = previous_log ? previous_log->next_id : 1;
	call_log = log;
	return 0;
}

static int __init luo_test_init(void)
{
	struct dentry *dir;
	int err;

	take_previous_log();
	err = make_call_log();
	if (err)
		return err;
	dir = debugfs_create_dir("luo_test", NULL);
	debugfs_create_file("calls", 0400, dir, NULL, &calls_fops);
	debugfs_create_file("previous", 0400, dir, NULL, &previous_fops);

	err = misc_register(&luo_test_device);
	if (err)
		return err;
	if (!register_handler) {
		pr_info("handler not registered (luo_test.register=0)\n");
		return 0;
	}
	err = liveupdate_register_file_handler(&luo_test_handler);
	if (err)
		pr_warn("handler not registered: %pe\n", ERR_PTR(err));
	return 0;
}
late_initcall(luo_test_init);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Test-only Live Update Orchestrator file handler");
