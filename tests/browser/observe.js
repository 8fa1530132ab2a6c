// Injected before the panel loads: records every state each shot card shows and the render
// progress values it shows, as the DOM changes, so a test can tell what it went through.
window.__shotStates = {};
window.__progress = {};
new MutationObserver(() => {
  for (const card of document.querySelectorAll('article.shot[data-shot]')) {
    const n = card.dataset.shot;
    const states = (window.__shotStates[n] ||= []);
    if (states[states.length - 1] !== card.dataset.state) states.push(card.dataset.state);
    const bar = card.querySelector('progress[data-testid="render-progress"]');
    if (bar) (window.__progress[n] ||= []).push(Number(bar.value));
  }
}).observe(document, { subtree: true, childList: true, attributes: true, characterData: true });
