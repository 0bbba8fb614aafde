"use strict";(self.rspackChunkgemma_ft_widgets=self.rspackChunkgemma_ft_widgets||[]).push([[266],{646(t,e,a){var r=a(601),n=a.n(r),o=a(314),s=(a.n(o))()(n());s.push([t.id,`/* The status-bar item of gemma-ft-widgets. */
.gft-lab-status {
  display: flex;
  align-items: center;
  gap: 6px;
  padding: 0 6px;
  cursor: pointer;
  font-size: var(--jp-ui-font-size1);
  color: var(--jp-ui-font-color1);
}

.gft-lab-status:hover {
  background: var(--jp-layout-color2);
}

.gft-lab-badge {
  border-radius: 3px;
  padding: 0 5px;
  font-weight: 600;
  color: white;
  background: var(--jp-layout-color4);
}

.gft-lab-badge[data-state='RUNNING'],
.gft-lab-badge[data-state='STARTING'] {
  background: var(--jp-brand-color1);
}

.gft-lab-badge[data-state='FINISHED'] {
  background: var(--jp-success-color1);
}

.gft-lab-badge[data-state='FAILED'] {
  background: var(--jp-error-color1);
}

.gft-lab-badge[data-state='ABORTED'],
.gft-lab-badge[data-state='STOPPING'],
.gft-lab-badge[data-state='ORPHANED'],
.gft-lab-badge[data-state='STALLED'] {
  background: var(--jp-warn-color1);
}

.gft-lab-offline .gft-lab-text {
  opacity: 0.6;
}
`,""]),a.d(e,{},{A:s})},314(t){t.exports=function(t){var e=[];return e.toString=function(){return this.map(function(e){var a="",r=void 0!==e[5];return e[4]&&(a+="@supports (".concat(e[4],") {")),e[2]&&(a+="@media ".concat(e[2]," {")),r&&(a+="@layer".concat(e[5].length>0?" ".concat(e[5]):""," {")),a+=t(e),r&&(a+="}"),e[2]&&(a+="}"),e[4]&&(a+="}"),a}).join("")},e.i=function(t,a,r,n,o){"string"==typeof t&&(t=[[null,t,void 0]]);var s={};if(r)for(var c=0;c<this.length;c++){var i=this[c][0];null!=i&&(s[i]=!0)}for(var u=0;u<t.length;u++){var l=[].concat(t[u]);r&&s[l[0]]||(void 0!==o&&(void 0===l[5]||(l[1]="@layer".concat(l[5].length>0?" ".concat(l[5]):""," {").concat(l[1],"}")),l[5]=o),a&&(l[2]&&(l[1]="@media ".concat(l[2]," {").concat(l[1],"}")),l[2]=a),n&&(l[4]?(l[1]="@supports (".concat(l[4],") {").concat(l[1],"}"),l[4]=n):l[4]="".concat(n)),e.push(l))}},e}},601(t){t.exports=function(t){return t[1]}},665(t,e,a){a.r(e);var r=a(72),n=a.n(r),o=a(825),s=a.n(o),c=a(659),i=a.n(c),u=a(56),l=a.n(u),d=a(540),p=a.n(d),f=a(113),g=a.n(f),v=a(646),b={};b.styleTagTransform=g(),b.setAttributes=l(),b.insert=i().bind(null,"head"),b.domAPI=s(),b.insertStyleElement=p(),n()(v.A,b);let m=v.A&&v.A.locals?v.A.locals:void 0;a.d(e,{},{default:m})},72(t){var e=[];function a(t){for(var a=-1,r=0;r<e.length;r++)if(e[r].identifier===t){a=r;break}return a}function r(t,r){for(var n={},o=[],s=0;s<t.length;s++){var c=t[s],i=r.base?c[0]+r.base:c[0],u=n[i]||0,l="".concat(i," ").concat(u);n[i]=u+1;var d=a(l),p={css:c[1],media:c[2],sourceMap:c[3],supports:c[4],layer:c[5]};if(-1!==d)e[d].references++,e[d].updater(p);else{var f=function(t,e){var a=e.domAPI(e);return a.update(t),function(e){e?(e.css!==t.css||e.media!==t.media||e.sourceMap!==t.sourceMap||e.supports!==t.supports||e.layer!==t.layer)&&a.update(t=e):a.remove()}}(p,r);r.byIndex=s,e.splice(s,0,{identifier:l,updater:f,references:1})}o.push(l)}return o}t.exports=function(t,n){var o=r(t=t||[],n=n||{});return function(t){t=t||[];for(var s=0;s<o.length;s++){var c=a(o[s]);e[c].references--}for(var i=r(t,n),u=0;u<o.length;u++){var l=a(o[u]);0===e[l].references&&(e[l].updater(),e.splice(l,1))}o=i}}},659(t){var e={};t.exports=function(t,a){var r=function(t){if(void 0===e[t]){var a=document.querySelector(t);if(window.HTMLIFrameElement&&a instanceof window.HTMLIFrameElement)try{a=a.contentDocument.head}catch(t){a=null}e[t]=a}return e[t]}(t);if(!r)throw Error("Couldn't find a style target. This probably means that the value for the 'insert' parameter is invalid.");r.appendChild(a)}},540(t){t.exports=function(t){var e=document.createElement("style");return t.setAttributes(e,t.attributes),t.insert(e,t.options),e}},56(t,e,a){t.exports=function(t){var e=a.nc;e&&t.setAttribute("nonce",e)}},825(t){t.exports=function(t){if("u"<typeof document)return{update:function(){},remove:function(){}};var e=t.insertStyleElement(t);return{update:function(a){var r,n,o;r="",a.supports&&(r+="@supports (".concat(a.supports,") {")),a.media&&(r+="@media ".concat(a.media," {")),(n=void 0!==a.layer)&&(r+="@layer".concat(a.layer.length>0?" ".concat(a.layer):""," {")),r+=a.css,n&&(r+="}"),a.media&&(r+="}"),a.supports&&(r+="}"),(o=a.sourceMap)&&"u">typeof btoa&&(r+="\n/*# sourceMappingURL=data:application/json;base64,".concat(btoa(unescape(encodeURIComponent(JSON.stringify(o))))," */")),t.styleTagTransform(r,e,t.options)},remove:function(){var t;null===(t=e).parentNode||t.parentNode.removeChild(t)}}}},113(t){t.exports=function(t,e){if(e.styleSheet)e.styleSheet.cssText=t;else{for(;e.firstChild;)e.removeChild(e.firstChild);e.appendChild(document.createTextNode(t))}}}}]);