// guest.h - thin wrappers of the syscalls the test guest needs (filled in by the test-bed work).
#pragma once
