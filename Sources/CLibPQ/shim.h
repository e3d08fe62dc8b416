#ifndef BANDITORE_CLIBPQ_SHIM_H
#define BANDITORE_CLIBPQ_SHIM_H
#include <libpq-fe.h>
#include <poll.h>
#endif
