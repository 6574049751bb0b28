// world: validator-plugin
//
// A validator in C: every node created under the bound paths must have a
// DNS-label name (1 to 63 of a-z, 0-9 and '-', not starting or ending with
// '-'), the naming rule of service and host registries. No stdio: the
// module imports nothing but its world.
#include <stdlib.h>
#include <string.h>

#include "validator_plugin.h"

static int valid_label(const uint8_t *s, size_t n) {
    if (n == 0 || n > 63 || s[0] == '-' || s[n - 1] == '-') return 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return 0;
    }
    return 1;
}

bool exports_corral_plugin_validator_validate(exports_corral_plugin_validator_context_t *ctx,
                                              exports_corral_plugin_validator_list_change_t *changes,
                                              validator_plugin_string_t *err) {
    bool ok = true;
    for (size_t i = 0; i < changes->len && ok; i++) {
        corral_plugin_types_change_t *c = &changes->ptr[i];
        if (c->kind != CORRAL_PLUGIN_TYPES_CHANGE_KIND_CREATED) continue;
        const uint8_t *p = c->path.ptr;
        size_t n = c->path.len, start = n;
        while (start > 0 && p[start - 1] != '/') start--;
        if (!valid_label(p + start, n - start)) {
            // "<path>: not a DNS label (a-z, 0-9, '-', at most 63)"
            static const char tail[] = ": not a DNS label (a-z, 0-9 and '-', at most 63)";
            char *msg = malloc(n + sizeof tail);
            memcpy(msg, p, n);
            memcpy(msg + n, tail, sizeof tail);
            err->ptr = (uint8_t *)msg;
            err->len = n + sizeof tail - 1;
            ok = false;
        }
    }
    exports_corral_plugin_validator_context_free(ctx);
    exports_corral_plugin_validator_list_change_free(changes);
    return ok;
}
