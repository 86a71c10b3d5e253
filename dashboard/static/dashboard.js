// Live state: poll the storyboard's state every 1.5 s; update each card's status, and reload the page when a
// shot's current take changes (a new take finished, or one was pinned) so thumbnails and takes are current.
(function () {
  const holder = document.getElementById("strip") || document.getElementById("takes");
  if (!holder) return;
  const url = holder.dataset.stateUrl;
  const onShot = holder.id === "takes" ? holder.dataset.shot : null;
  let last = null;
  async function tick() {
    try {
      const response = await fetch(url, {credentials: "same-origin"});
      if (!response.ok) return;
      const state = await response.json();
      if (onShot) {
        const now = JSON.stringify(state[onShot]);
        if (last !== null && now !== last) { location.reload(); return; }
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
    } catch (e) { /* the server restarts: try again next tick */ }
  }
  setInterval(tick, 1500);
  tick();
})();
