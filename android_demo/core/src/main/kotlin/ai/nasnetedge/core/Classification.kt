package ai.nasnetedge.core

data class Prediction(val index: Int, val label: String, val probability: Float)

object Classification {
    fun softmax(logits: FloatArray): FloatArray {
        var max = Float.NEGATIVE_INFINITY
        for (z in logits) if (z > max) max = z
        val e = FloatArray(logits.size) { Math.exp((logits[it] - max).toDouble()).toFloat() }
        val sum = e.sum()
        return FloatArray(e.size) { e[it] / sum }
    }

    /** Best k, highest first; ties keep the lower index first (as numpy's stable argsort). */
    fun topK(probabilities: FloatArray, labels: List<String>, k: Int): List<Prediction> {
        require(labels.size == probabilities.size) { "model has ${probabilities.size} outputs but ${labels.size} labels" }
        val order = probabilities.indices.sortedWith(compareBy<Int>({ -probabilities[it] }, { it }))
        return order.take(Math.min(k, order.size)).map { Prediction(it, labels[it], probabilities[it]) }
    }

    /** Dequantizes an int8 output tensor. */
    fun dequantize(q: ByteArray, scale: Float, zeroPoint: Int): FloatArray =
        FloatArray(q.size) { (q[it] - zeroPoint) * scale }

    /** Dequantizes a uint8 output tensor (`--io uint8`): the bytes read as unsigned. */
    fun dequantizeUint8(q: ByteArray, scale: Float, zeroPoint: Int): FloatArray =
        FloatArray(q.size) { ((q[it].toInt() and 0xFF) - zeroPoint) * scale }
}

/** Exponential moving average of probabilities over frames: alpha = 0 turns smoothing off. */
class Smoother(private val alpha: Float) {
    private var state: FloatArray? = null

    init {
        require(alpha >= 0f && alpha < 1f) { "smoothing must be in [0, 1)" }
    }

    fun update(p: FloatArray): FloatArray {
        val s = state
        val next = if (s == null || alpha == 0f) p.copyOf() else FloatArray(p.size) { alpha * s[it] + (1 - alpha) * p[it] }
        state = next
        return next
    }
}

/** Just enough JSON reading for the toolkit's manifests (flat numbers, string arrays, one nested object). */
object Json {
    fun number(json: String, key: String): Double? {
        val m = Regex("\"" + Regex.escape(key) + "\"\\s*:\\s*(-?[0-9.eE+-]+)").find(json) ?: return null
        return m.groupValues[1].toDoubleOrNull()
    }

    fun string(json: String, key: String): String? {
        val m = Regex("\"" + Regex.escape(key) + "\"\\s*:\\s*\"((?:[^\"\\\\]|\\\\.)*)\"").find(json) ?: return null
        return unescape(m.groupValues[1])
    }

    fun objectField(json: String, key: String): String? {
        val start = Regex("\"" + Regex.escape(key) + "\"\\s*:\\s*\\{").find(json) ?: return null
        var depth = 0
        var i = start.range.last
        while (i < json.length) {
            when (json[i]) {
                '{' -> depth++
                '}' -> { depth--; if (depth == 0) return json.substring(start.range.last, i + 1) }
            }
            i++
        }
        return null
    }

    fun stringArray(json: String, key: String): List<String> {
        val m = Regex("\"" + Regex.escape(key) + "\"\\s*:\\s*\\[(.*?)\\]", RegexOption.DOT_MATCHES_ALL).find(json)
            ?: return emptyList()
        return Regex("\"((?:[^\"\\\\]|\\\\.)*)\"").findAll(m.groupValues[1]).map { unescape(it.groupValues[1]) }.toList()
    }

    private fun unescape(s: String): String = s.replace("\\\"", "\"").replace("\\\\", "\\").replace("\\/", "/")
}
