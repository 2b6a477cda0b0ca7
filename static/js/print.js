// Print buttons (data-print): the Content-Security-Policy allows no inline onclick handlers.
document.addEventListener("click", (event) => {
  if (event.target.closest("[data-print]")) {
    window.print();
  }
});
