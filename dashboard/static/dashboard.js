// The queue page swaps its sections every 2 s. Live state: poll the storyboard's state every 1.5 s and update each card's status. On a storyboard, a card
// whose current take changed (a new take finished, or one was pinned) reloads the page so thumbnails are current;
// any other change swaps the "rendering now" section (steps, time left, jobs) in place.
// On a shot page nothing reloads: the takes table and the review section are fetched and swapped in place, the
// review section only while nobody is typing in it, and the rerender form is never touched.
(function () {
  // The queue page: its sections fetched again every 2 s and swapped in place (no form on it to keep).
  const queue = document.getElementById("queue-running");
  if (queue) {
    setInterval(async () => {
      try {
        const response = await fetch(location.pathname, {credentials: "same-origin"});
        if (!response.ok) return;
        const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
        for (const id of ["queue-running", "queue-jobs", "queue-workers"]) {
          const part = fresh.getElementById(id);
          if (part) document.getElementById(id).replaceWith(part);
        }
      } catch (e) { /* the server restarts: try again */ }
    }, 2000);
    return;
  }
  const holder = document.getElementById("strip") || document.getElementById("takes");
  if (!holder) return;
  const url = holder.dataset.stateUrl;
  const onShot = holder.id === "takes" ? holder.dataset.shot : null;
  let last = null;

  function busy(section) {
    if (!section) return false;
    if (section.contains(document.activeElement) && document.activeElement !== document.body) return true;
    return [...section.querySelectorAll("input:not([type=hidden]), textarea")].some(f => f.value !== "");
  }

  async function freshPage() {
    const response = await fetch(location.pathname + location.search, {credentials: "same-origin"});
    if (!response.ok) return null;
    return new DOMParser().parseFromString(await response.text(), "text/html");
  }

  async function refreshNow() {
    const fresh = await freshPage();
    const now = fresh && fresh.getElementById("now");
    if (now) document.getElementById("now").replaceWith(now);
  }

  async function refreshShot() {
    const fresh = await freshPage();
    if (!fresh) return;
    const takes = fresh.getElementById("takes");
    if (takes) document.getElementById("takes").replaceWith(takes);
    const review = document.getElementById("review");
    const freshReview = fresh.getElementById("review");
    if (review && freshReview && !busy(review)) review.replaceWith(freshReview);
  }

  async function tick() {
    try {
      const response = await fetch(url, {credentials: "same-origin"});
      if (!response.ok) return;
      const state = await response.json();
      if (onShot) {
        const now = JSON.stringify(state[onShot]);
        if (last !== null && now !== last) await refreshShot();
        last = now;
        return;
      }
      for (const card of document.querySelectorAll(".card[data-shot]")) {
        const s = state[card.dataset.shot];
        if (!s) continue;
        card.querySelector("[data-status]").textContent = s.label;
        card.className = "card state-" + s.state;
        if (String(s.take || "") !== card.dataset.take && s.state !== "rendering") { location.reload(); return; }
      }
      const now = JSON.stringify(state);
      if (last !== null && now !== last && document.getElementById("now")) await refreshNow();
      last = now;
    } catch (e) { /* the server restarts: try again next tick */ }
  }
  setInterval(tick, 1500);
  tick();
})();
