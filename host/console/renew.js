// Renews the console's session from a worker. A page's timers are
// throttled to one wake-up a minute once its tab has been hidden a while;
// a worker's are not, so the session (and the console's ephemerals) stays
// alive in a background tab.
let timer = null;

onmessage = ({ data }) => {
  clearInterval(timer);
  if (!data) return;
  const { id, token, every } = data;
  timer = setInterval(async () => {
    try {
      const r = await fetch(`/api/v1/sessions/${id}`, { method: 'PUT', headers: { Authorization: `Bearer ${token}` } });
      if (!r.ok) postMessage({ id, status: r.status, body: await r.json().catch(() => ({})) });
    } catch (e) {
      postMessage({ id, status: 0, body: { message: e.message } });
    }
  }, every);
};
