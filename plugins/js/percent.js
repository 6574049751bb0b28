// world: validator-plugin
// A validator in JavaScript (QuickJS, built with componentize-qjs): every
// value written under the bound paths must be a whole percentage, 0 to 100.
// A thrown string vetoes the write, and the client gets it as the reason.
export const validator = {
  validate(ctx, changes) {
    for (const c of changes) {
      if (c.data === undefined || c.data === null) continue;
      const text = String.fromCharCode(...c.data);
      if (text === "") continue;
      if (!/^[0-9]+$/.test(text) || Number(text) > 100) {
        throw `${c.path}: ${JSON.stringify(text)} is not a percentage (0 to 100)`;
      }
    }
  },
};
