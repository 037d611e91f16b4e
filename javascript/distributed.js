// distributed: refresh the Distributed tab's worker table every 2 s while the tab is on screen.
// Works in A1111 (gradioApp) and Forge, and on a bare gradio page (the browser tests).
(function () {
    "use strict";
    const REFRESH_MS = 2000;

    function root() {
        return typeof gradioApp === "function" ? gradioApp() : document;
    }

    function refreshButton() {
        const element = root().querySelector("#distributed_refresh");
        if (!element) {
            return null;
        }
        return element.tagName === "BUTTON" ? element : element.querySelector("button");
    }

    function tick() {
        const status = root().querySelector("#distributed_status");
        const button = refreshButton();
        const visible = status && status.offsetParent !== null && document.visibilityState === "visible";
        if (button && visible && !document.querySelector("#distributed_root .pending")) {
            button.click();
        }
    }

    setInterval(tick, REFRESH_MS);
})();
