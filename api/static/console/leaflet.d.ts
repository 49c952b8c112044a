// The part of Leaflet 1.9 (vendor/leaflet/leaflet.js, a classic script defining window.L)
// that map.js uses, so that tsc checks map.js against it. Not the whole API: add what you
// use. Overlay content (tooltips, popups) is typed HTMLElement only on purpose: Leaflet
// parses a string as HTML, and the console never builds markup from strings.

declare namespace L {
  type LatLngTuple = [number, number];
  /** Polygon rings, or several polygons' rings (MultiPolygon). */
  type LatLngRings = LatLngTuple[][] | LatLngTuple[][][];

  interface LatLng {
    lat: number;
    lng: number;
  }

  interface LatLngBounds {
    extend(other: LatLngBounds | LatLngTuple): LatLngBounds;
    contains(point: LatLngTuple | LatLng): boolean;
    isValid(): boolean;
    pad(ratio: number): LatLngBounds;
  }

  interface LeafletEvent {
    originalEvent?: Event & { key?: string };
  }

  interface Evented {
    on(type: string, fn: (event: LeafletEvent) => void): this;
  }

  interface Layer extends Evented {
    addTo(target: Map | LayerGroup): this;
    remove(): this;
    getElement(): HTMLElement | SVGElement | undefined;
    bindTooltip(content: HTMLElement, options?: { sticky?: boolean; direction?: string; className?: string }): this;
    /** A function is called each time the popup opens. */
    bindPopup(
      content: HTMLElement | ((layer: Layer) => HTMLElement),
      options?: { className?: string; maxWidth?: number },
    ): this;
    openPopup(): this;
  }

  interface PathOptions {
    pane?: string;
    className?: string;
    interactive?: boolean;
    fill?: boolean;
    weight?: number;
  }

  interface Polygon extends Layer {
    getBounds(): LatLngBounds;
    bringToFront(): this;
  }

  interface DivIconOptions {
    className?: string;
    html?: HTMLElement | false;
    iconSize?: [number, number];
    iconAnchor?: [number, number];
    popupAnchor?: [number, number];
  }

  interface DivIcon {}

  interface MarkerOptions {
    icon?: DivIcon;
    pane?: string;
    title?: string;
    keyboard?: boolean;
    riseOnHover?: boolean;
    zIndexOffset?: number;
  }

  interface Marker extends Layer {
    getLatLng(): LatLng;
  }

  interface LayerGroup extends Layer {
    clearLayers(): this;
  }

  interface TileLayerOptions {
    subdomains?: string;
    maxZoom?: number;
    pane?: string;
  }

  interface TileLayer extends Layer {}

  interface MapOptions {
    attributionControl?: boolean;
    zoomControl?: boolean;
    zoomSnap?: number;
    minZoom?: number;
    maxZoom?: number;
  }

  interface FitOptions {
    padding?: [number, number];
    maxZoom?: number;
    animate?: boolean;
  }

  interface Map extends Evented {
    createPane(name: string): HTMLElement;
    fitBounds(bounds: LatLngBounds, options?: FitOptions): this;
    setView(center: LatLngTuple | LatLng, zoom: number, options?: { animate?: boolean }): this;
    getBounds(): LatLngBounds;
    getCenter(): LatLng;
    getZoom(): number;
    invalidateSize(): this;
    remove(): this;
  }

  function map(element: HTMLElement, options?: MapOptions): Map;
  function tileLayer(template: string, options?: TileLayerOptions): TileLayer;
  function polygon(latlngs: LatLngRings, options?: PathOptions): Polygon;
  function marker(latlng: LatLngTuple, options?: MarkerOptions): Marker;
  function divIcon(options: DivIconOptions): DivIcon;
  function layerGroup(): LayerGroup;
  function latLngBounds(corners: LatLngTuple[]): LatLngBounds;
}

interface Window {
  /** Leaflet, once vendor/leaflet/leaflet.js has run (map.js loads it on first use). */
  L?: typeof L;
}
