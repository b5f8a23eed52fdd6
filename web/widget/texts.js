// Every word the widget shows that the API does not send (the system messages come with their
// text, from the policy): one table per language, chosen by the browser's language.

const TEXTS = {
  en: {
    title: "Customer service",
    connecting: "Connecting…",
    offline: "You are offline: we will send your messages when the connection is back.",
    reconnecting: "Reconnecting…",
    noSession: "Start a chat from the shop's page to talk to us here.",
    ended: "This chat is no longer available.",
    queued: (position) => `You are number ${position} in the queue.`,
    queuedNoPosition: "Waiting for the next free agent.",
    wait: (minutes) => (minutes <= 1 ? "About a minute to wait." : `About ${minutes} minutes to wait.`),
    waitSoon: "An agent will be with you soon.",
    chattingWith: (name) => `You are chatting with ${name}.`,
    withBot: "Our assistant answers first: ask for a person at any time.",
    bot: "Bot",
    quickReplies: "Suggested replies",
    quickReply: (text) => `Send: ${text}`,
    joined: (name) => `${name} joined the chat.`,
    closed: "This chat has ended.",
    typing: (name) => `${name} is typing…`,
    agent: "Agent",
    you: "You",
    transcript: "Conversation",
    messageLabel: "Your message",
    placeholder: "Type a message…",
    send: "Send",
    sending: "Sending…",
    retrying: "Not sent yet: trying again…",
    failed: "Not sent",
    sent: "Sent",
    read: "Read",
    image: "Image",
    video: "Video",
    attach: "Send a photo, a video or a PDF",
    openImage: "Open the photo",
    closeViewer: "Close",
    fileLink: (size) => `PDF document (${size})`,
    uploading: (name) => `Sending ${name || "a file"}…`,
    attachmentRefused: (name, reason) => `${name || "The file"} was not sent: ${reason}`,
    uploadFailed: (name) => `${name || "The file"} was not sent: please try again.`,
    rateTitle: "How did we do?",
    yourRating: "Your rating",
    stars: (n) => (n === 1 ? "1 star" : `${n} stars`),
    resolvedQuestion: "Was your question resolved?",
    yes: "Yes",
    no: "No",
    comment: "Comment (optional)",
    submitRating: "Send rating",
    thanksRating: "Thank you for your rating!",
    ratingExpired: "The time to rate this chat is over.",
    chooseStars: "Choose from 1 to 5 stars.",
    leaveTitle: "Leave us a message",
    nextOpening: (when) => `We open again ${when}.`,
    leaveMessage: "Your message",
    contact: "How can we reach you? (optional)",
    submitLeft: "Send message",
    thanksLeft: "Thank you: we will get back to you.",
    tryAgain: "That did not work: please try again.",
    newMessages: "New messages",
  },
  zh: {
    title: "在线客服",
    connecting: "正在连接…",
    offline: "您已离线：网络恢复后将自动发送您的消息。",
    reconnecting: "正在重新连接…",
    noSession: "请从商城页面发起咨询。",
    ended: "此会话已不可用。",
    queued: (position) => `您前面还有 ${position - 1} 位，当前排在第 ${position} 位。`,
    queuedNoPosition: "正在为您安排客服。",
    wait: (minutes) => `预计等待约 ${Math.max(minutes, 1)} 分钟。`,
    waitSoon: "客服马上为您服务。",
    chattingWith: (name) => `客服 ${name} 正在为您服务。`,
    withBot: "智能助手先为您解答，随时可以转人工。",
    bot: "机器人",
    quickReplies: "推荐回复",
    quickReply: (text) => `发送：${text}`,
    joined: (name) => `客服 ${name} 已加入会话。`,
    closed: "会话已结束。",
    typing: (name) => `${name} 正在输入…`,
    agent: "客服",
    you: "我",
    transcript: "会话记录",
    messageLabel: "输入消息",
    placeholder: "请输入消息…",
    send: "发送",
    sending: "发送中…",
    retrying: "尚未发送，正在重试…",
    failed: "发送失败",
    sent: "已发送",
    read: "已读",
    image: "图片",
    video: "视频",
    attach: "发送图片、视频或 PDF",
    openImage: "查看大图",
    closeViewer: "关闭",
    fileLink: (size) => `PDF 文件（${size}）`,
    uploading: (name) => `正在发送 ${name || "文件"}…`,
    attachmentRefused: (name, reason) => `${name || "文件"} 未发送：${reason}`,
    uploadFailed: (name) => `${name || "文件"} 未发送，请重试。`,
    rateTitle: "请对本次服务评价",
    yourRating: "评分",
    stars: (n) => `${n} 星`,
    resolvedQuestion: "您的问题解决了吗？",
    yes: "已解决",
    no: "未解决",
    comment: "留言（选填）",
    submitRating: "提交评价",
    thanksRating: "感谢您的评价！",
    ratingExpired: "评价时间已过。",
    chooseStars: "请选择 1 到 5 星。",
    leaveTitle: "给我们留言",
    nextOpening: (when) => `我们将于 ${when} 恢复服务。`,
    leaveMessage: "留言内容",
    contact: "联系方式（选填）",
    submitLeft: "提交留言",
    thanksLeft: "感谢留言，我们会尽快联系您。",
    tryAgain: "操作未成功，请重试。",
    newMessages: "新消息",
  },
};

/** The browser's language among ours: Chinese for any `zh…`, English otherwise. */
export const language = (navigator.languages?.[0] ?? navigator.language ?? "en")
  .toLowerCase()
  .startsWith("zh")
  ? "zh"
  : "en";

export const t = TEXTS[language];

const LOCALE = language === "zh" ? "zh-CN" : "en";
const CLOCK = { hour: "2-digit", minute: "2-digit" };

/** A time as the visitor reads it, in their language and time zone (with its day, or not). */
function formatted(iso, options) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? "" : new Intl.DateTimeFormat(LOCALE, options).format(date);
}

export const formatWhen = (iso) => formatted(iso, { weekday: "short", month: "short", day: "numeric", ...CLOCK });
export const formatClock = (iso) => formatted(iso, CLOCK);
