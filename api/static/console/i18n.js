// Console strings in Simplified Chinese and English. Keys are stable; {name} is replaced.
// Add a language by adding a dictionary with the same keys (missing keys fall back to en).

export const LANGUAGES = { "zh-CN": "中文", en: "English" };

const STRINGS = {
  en: {
    "app.title": "Xueliang operator console",
    "app.brand": "Xueliang",
    "nav.incidents": "Incidents",
    "nav.wall": "Camera wall",
    "nav.logout": "Sign out",
    "nav.language": "Language",
    "nav.skip": "Skip to content",
    "login.title": "Sign in",
    "login.token": "API token",
    "login.hint": "Paste the operator token you were given. It is kept for this browser tab only.",
    "login.submit": "Sign in",
    "login.bad": "This token was not accepted.",
    "login.forbidden": "This token has no operator rights.",
    "login.failed": "The service could not be reached.",
    "grids.title": "Grids",
    "grids.all": "All grids",
    "grids.none": "No grids defined.",
    "grids.unavailable": "Grids are not available.",
    "live.connected": "Live updates on",
    "live.reconnecting": "Live updates reconnecting…",
    "queue.title": "Incident queue",
    "queue.filters": "Filters",
    "queue.camera": "Camera",
    "queue.type": "Type",
    "queue.status": "Status",
    "queue.since": "From",
    "queue.until": "To",
    "queue.any": "Any",
    "queue.apply": "Apply",
    "queue.reset": "Reset",
    "queue.more": "Load older",
    "queue.empty": "No incidents match.",
    "queue.started": "Started",
    "queue.grid": "Grid",
    "queue.clip": "Clip",
    "queue.new_count": "{n} new incident(s)",
    "queue.grid_filter": "Grid: {grid}",
    "type.motion": "Motion",
    "type.crowd": "Crowd",
    "status.new": "New",
    "status.acknowledged": "Acknowledged",
    "status.resolved": "Resolved",
    "status.dismissed": "Dismissed",
    "clip.pending": "Pending",
    "clip.archived": "Ready",
    "clip.failed": "Failed",
    "clip.none": "None",
    "incident.title": "Incident",
    "incident.back": "Back to the queue",
    "incident.camera": "Camera",
    "incident.started": "Started",
    "incident.ended": "Ended",
    "incident.ongoing": "ongoing",
    "incident.grid": "Grid",
    "incident.persons": "Peak persons",
    "incident.cases": "Linked cases",
    "incident.no_cases": "None",
    "incident.snapshot": "Snapshot",
    "incident.clip": "Clip",
    "incident.clip_pending": "The clip is being archived; it appears here when ready.",
    "incident.clip_failed": "The clip could not be archived: {error}",
    "incident.no_clip": "No clip for this incident.",
    "incident.no_snapshot": "No snapshot.",
    "incident.sha": "SHA-256",
    "incident.review": "Review",
    "incident.note": "Note",
    "incident.note_hint": "Optional, kept in the history.",
    "incident.history": "History",
    "incident.no_history": "No review actions yet.",
    "incident.conflict": "This action does not apply any more: {detail}",
    "incident.download": "Download clip",
    "history.at": "Time",
    "history.actor": "By",
    "history.action": "Action",
    "history.note": "Note",
    "action.acknowledge": "Acknowledge",
    "action.resolve": "Resolve",
    "action.dismiss": "Dismiss",
    "action.reopen": "Reopen",
    "action.created": "Created",
    "wall.title": "Camera wall",
    "wall.empty": "No cameras.",
    "wall.live": "Live",
    "wall.stop": "Stop",
    "wall.live_limit": "At most {n} live tiles at once on this console.",
    "camera.state.connecting": "Connecting",
    "camera.state.online": "Online",
    "camera.state.offline": "Offline",
    "camera.state.disabled": "Disabled",
    "camera.title": "Camera",
    "camera.back": "Back to the wall",
    "camera.status": "Status",
    "camera.fps": "Frame rate",
    "camera.last_frame": "Last frame",
    "camera.reconnects": "Reconnects",
    "camera.last_error": "Last error",
    "camera.availability": "Availability",
    "camera.since": "since {time}",
    "camera.live": "Live view",
    "camera.live_start": "Watch live",
    "camera.live_stop": "Stop",
    "camera.live_connecting": "Connecting…",
    "camera.live_failed": "Live view failed: {detail}",
    "camera.recent": "Recent incidents",
    "camera.no_frame": "No picture yet",
    "error.generic": "Something went wrong: {detail}",
    "error.notfound": "Not found.",
  },
  "zh-CN": {
    "app.title": "雪亮 值守控制台",
    "app.brand": "雪亮",
    "nav.incidents": "事件",
    "nav.wall": "视频墙",
    "nav.logout": "退出",
    "nav.language": "语言",
    "nav.skip": "跳到内容",
    "login.title": "登录",
    "login.token": "访问令牌",
    "login.hint": "请粘贴分配给您的值守令牌，仅在当前标签页中保存。",
    "login.submit": "登录",
    "login.bad": "令牌无效。",
    "login.forbidden": "该令牌没有值守权限。",
    "login.failed": "无法连接服务。",
    "grids.title": "网格",
    "grids.all": "全部网格",
    "grids.none": "尚未定义网格。",
    "grids.unavailable": "网格信息不可用。",
    "live.connected": "实时更新中",
    "live.reconnecting": "实时更新重连中…",
    "queue.title": "事件队列",
    "queue.filters": "筛选",
    "queue.camera": "摄像机",
    "queue.type": "类型",
    "queue.status": "状态",
    "queue.since": "开始时间",
    "queue.until": "结束时间",
    "queue.any": "全部",
    "queue.apply": "应用",
    "queue.reset": "重置",
    "queue.more": "加载更早的事件",
    "queue.empty": "没有符合条件的事件。",
    "queue.started": "发生时间",
    "queue.grid": "网格",
    "queue.clip": "录像",
    "queue.new_count": "{n} 条新事件",
    "queue.grid_filter": "网格：{grid}",
    "type.motion": "移动侦测",
    "type.crowd": "人员聚集",
    "status.new": "新事件",
    "status.acknowledged": "已确认",
    "status.resolved": "已处置",
    "status.dismissed": "已忽略",
    "clip.pending": "归档中",
    "clip.archived": "可播放",
    "clip.failed": "失败",
    "clip.none": "无",
    "incident.title": "事件",
    "incident.back": "返回事件队列",
    "incident.camera": "摄像机",
    "incident.started": "开始",
    "incident.ended": "结束",
    "incident.ongoing": "进行中",
    "incident.grid": "网格",
    "incident.persons": "最多人数",
    "incident.cases": "关联案件",
    "incident.no_cases": "无",
    "incident.snapshot": "抓拍",
    "incident.clip": "录像",
    "incident.clip_pending": "录像正在归档，完成后将在此显示。",
    "incident.clip_failed": "录像归档失败：{error}",
    "incident.no_clip": "该事件没有录像。",
    "incident.no_snapshot": "没有抓拍。",
    "incident.sha": "SHA-256 校验",
    "incident.review": "处置",
    "incident.note": "备注",
    "incident.note_hint": "可选，将记录在处置历史中。",
    "incident.history": "处置历史",
    "incident.no_history": "暂无处置记录。",
    "incident.conflict": "该操作已不适用：{detail}",
    "incident.download": "下载录像",
    "history.at": "时间",
    "history.actor": "操作人",
    "history.action": "操作",
    "history.note": "备注",
    "action.acknowledge": "确认",
    "action.resolve": "处置完毕",
    "action.dismiss": "忽略",
    "action.reopen": "重新打开",
    "action.created": "生成",
    "wall.title": "视频墙",
    "wall.empty": "没有摄像机。",
    "wall.live": "实时",
    "wall.stop": "停止",
    "wall.live_limit": "本控制台最多同时播放 {n} 路实时视频。",
    "camera.state.connecting": "连接中",
    "camera.state.online": "在线",
    "camera.state.offline": "离线",
    "camera.state.disabled": "已停用",
    "camera.title": "摄像机",
    "camera.back": "返回视频墙",
    "camera.status": "状态",
    "camera.fps": "帧率",
    "camera.last_frame": "最后一帧",
    "camera.reconnects": "重连次数",
    "camera.last_error": "最近错误",
    "camera.availability": "在线率",
    "camera.since": "自 {time} 起",
    "camera.live": "实时视频",
    "camera.live_start": "观看实时视频",
    "camera.live_stop": "停止",
    "camera.live_connecting": "连接中…",
    "camera.live_failed": "实时视频失败：{detail}",
    "camera.recent": "最近事件",
    "camera.no_frame": "暂无画面",
    "error.generic": "出错了：{detail}",
    "error.notfound": "未找到。",
  },
};

const STORAGE_KEY = "xl.lang";
let current = pickLanguage();

function pickLanguage() {
  const saved = localStorage.getItem(STORAGE_KEY);
  if (saved && saved in STRINGS) return saved;
  return (navigator.language || "").toLowerCase().startsWith("zh") ? "zh-CN" : "en";
}

/** The current language code ("zh-CN" or "en").
 *  @returns {string} */
export function lang() {
  return current;
}

/** Switch language; remembered in localStorage (not a secret).
 *  @param {string} code */
export function setLang(code) {
  if (!(code in STRINGS)) return;
  current = code;
  localStorage.setItem(STORAGE_KEY, code);
  document.documentElement.lang = code;
}

/** The string for key in the current language, with {vars} filled in.
 *  @param {string} key
 *  @param {Record<string, unknown>} [vars]
 *  @returns {string} */
export function t(key, vars = {}) {
  const text = STRINGS[current][key] ?? STRINGS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(vars[name] ?? ""));
}

/** Fill every [data-i18n] element's text under root (static parts of the page).
 *  @param {ParentNode} [root] */
export function translate(root = document) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(/** @type {HTMLElement} */ (el).dataset.i18n);
  document.title = t("app.title");
}

/** A date-time in the current language's conventions.
 *  @param {string | null | undefined} iso */
export function formatTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return d.toLocaleString(current, { hour12: false });
}
