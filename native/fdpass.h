// fdpass.h - thin sendmsg/recvmsg wrappers (filled in by the fd-passing work).
#pragma once
