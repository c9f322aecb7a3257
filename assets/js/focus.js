// A look-up that found nothing (order, dashboard) marks its field `autofocus`, so that the
// buyer lands where they must act. These forms send their answer to an address with a
// fragment (`/order#result`), and Chrome then skips autofocus and, going to the fragment once
// the page has loaded, drops the focus: it is moved here after that.
(function () {
  'use strict';
  function land() {
    var field = document.querySelector('[autofocus]');
    if (field && document.activeElement !== field) field.focus();
  }
  if (document.readyState === 'complete') setTimeout(land, 0);
  else window.addEventListener('load', function () { setTimeout(land, 0); });
})();
