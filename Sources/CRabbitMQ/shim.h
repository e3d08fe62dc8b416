#ifndef BANDITORE_CRABBITMQ_SHIM_H
#define BANDITORE_CRABBITMQ_SHIM_H

// rabbitmq-c 0.11 installs its headers at the top of the include path; 0.12+ under rabbitmq-c/.
#if __has_include(<rabbitmq-c/amqp.h>)
#include <rabbitmq-c/amqp.h>
#include <rabbitmq-c/tcp_socket.h>
#else
#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>
#endif

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/eventfd.h>
#include <sys/select.h>
#include <sys/time.h>

/// amqp_login is variadic, which Swift cannot call: plain-SASL login with fixed arguments.
static inline amqp_rpc_reply_t banditore_amqp_login_plain(amqp_connection_state_t state, const char *vhost,
                                                          int channel_max, int frame_max, int heartbeat,
                                                          const amqp_table_t *properties,
                                                          const char *user, const char *password) {
    return amqp_login_with_properties(state, vhost, channel_max, frame_max, heartbeat, properties,
                                      AMQP_SASL_METHOD_PLAIN, user, password);
}

/// The method id of a decoded method frame (a union member Swift imports awkwardly).
static inline amqp_method_number_t banditore_frame_method_id(const amqp_frame_t *frame) {
    return frame->payload.method.id;
}

static inline void *banditore_frame_method_decoded(const amqp_frame_t *frame) {
    return frame->payload.method.decoded;
}

static inline amqp_basic_properties_t *banditore_frame_properties(const amqp_frame_t *frame) {
    return (amqp_basic_properties_t *)frame->payload.properties.decoded;
}

static inline uint64_t banditore_frame_body_size(const amqp_frame_t *frame) {
    return frame->payload.properties.body_size;
}

static inline amqp_bytes_t banditore_frame_body_fragment(const amqp_frame_t *frame) {
    return frame->payload.body_fragment;
}

/// Waits up to `micros` microseconds for `fd` to become readable; returns select's result (> 0: readable).
static inline int banditore_wait_readable(int fd, long micros) {
    fd_set set;
    FD_ZERO(&set);
    FD_SET(fd, &set);
    struct timeval tv = { 0, micros };
    return select(fd + 1, &set, NULL, NULL, &tv);
}

/// Corks (1) or uncorks (0) a TCP socket: while corked, the kernel holds small writes and sends them as full
/// segments; uncorking sends what is held at once.
static inline int banditore_set_cork(int fd, int on) {
    return setsockopt(fd, IPPROTO_TCP, TCP_CORK, &on, sizeof(on));
}

/// Sends a heartbeat frame.
static inline int banditore_send_heartbeat(amqp_connection_state_t state) {
    amqp_frame_t frame;
    frame.frame_type = AMQP_FRAME_HEARTBEAT;
    frame.channel = 0;
    return amqp_send_frame(state, &frame);
}


// Method ids and property flags as plain constants: the library's macros carry casts Swift does not import.
static const uint32_t BANDITORE_BASIC_DELIVER = AMQP_BASIC_DELIVER_METHOD;
static const uint32_t BANDITORE_BASIC_ACK = AMQP_BASIC_ACK_METHOD;
static const uint32_t BANDITORE_BASIC_NACK = AMQP_BASIC_NACK_METHOD;
static const uint32_t BANDITORE_BASIC_RETURN = AMQP_BASIC_RETURN_METHOD;
static const uint32_t BANDITORE_BASIC_CANCEL = AMQP_BASIC_CANCEL_METHOD;
static const uint32_t BANDITORE_CHANNEL_CLOSE = AMQP_CHANNEL_CLOSE_METHOD;
static const uint32_t BANDITORE_CHANNEL_CLOSE_OK = AMQP_CHANNEL_CLOSE_OK_METHOD;
static const uint32_t BANDITORE_CONNECTION_CLOSE = AMQP_CONNECTION_CLOSE_METHOD;
static const uint32_t BANDITORE_CONNECTION_CLOSE_OK = AMQP_CONNECTION_CLOSE_OK_METHOD;
static const uint32_t BANDITORE_CONNECTION_BLOCKED = AMQP_CONNECTION_BLOCKED_METHOD;
static const uint32_t BANDITORE_CONNECTION_UNBLOCKED = AMQP_CONNECTION_UNBLOCKED_METHOD;

static const uint16_t BANDITORE_FLAG_CONTENT_TYPE = AMQP_BASIC_CONTENT_TYPE_FLAG;
static const uint16_t BANDITORE_FLAG_CONTENT_ENCODING = AMQP_BASIC_CONTENT_ENCODING_FLAG;
static const uint16_t BANDITORE_FLAG_HEADERS = AMQP_BASIC_HEADERS_FLAG;
static const uint16_t BANDITORE_FLAG_DELIVERY_MODE = AMQP_BASIC_DELIVERY_MODE_FLAG;
static const uint16_t BANDITORE_FLAG_PRIORITY = AMQP_BASIC_PRIORITY_FLAG;
static const uint16_t BANDITORE_FLAG_CORRELATION_ID = AMQP_BASIC_CORRELATION_ID_FLAG;
static const uint16_t BANDITORE_FLAG_REPLY_TO = AMQP_BASIC_REPLY_TO_FLAG;
static const uint16_t BANDITORE_FLAG_EXPIRATION = AMQP_BASIC_EXPIRATION_FLAG;
static const uint16_t BANDITORE_FLAG_MESSAGE_ID = AMQP_BASIC_MESSAGE_ID_FLAG;
static const uint16_t BANDITORE_FLAG_TIMESTAMP = AMQP_BASIC_TIMESTAMP_FLAG;
static const uint16_t BANDITORE_FLAG_TYPE = AMQP_BASIC_TYPE_FLAG;
static const uint16_t BANDITORE_FLAG_APP_ID = AMQP_BASIC_APP_ID_FLAG;

#endif
