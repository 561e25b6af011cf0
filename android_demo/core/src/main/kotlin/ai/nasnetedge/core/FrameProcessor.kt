package ai.nasnetedge.core

/**
 * Frame processing of the Android demo, with no Android dependency: YUV_420_888 to RGB, rotation,
 * center crop, bilinear resize, normalization or int8 quantization. It mirrors edge/preprocessing.py
 * line by line (square center crop of `cropFraction` of the shorter side, bilinear resize with
 * half-pixel centers like OpenCV INTER_LINEAR, rounded to 8 bits, then x * scale + offset).
 */
class Preprocessing(
    val size: Int = 224,
    val cropFraction: Float = 0.875f,
    val scale: Float = 1f / 127.5f,
    val offset: Float = -1f
) {
    companion object {
        /** Reads the "preprocessing" object of a toolkit manifest (the .json beside an artifact, or the one
         *  embedded in a .tflite). */
        fun fromManifest(json: String): Preprocessing {
            val block = Json.objectField(json, "preprocessing") ?: json
            return Preprocessing(
                size = Json.number(block, "size")?.toInt() ?: 224,
                cropFraction = Json.number(block, "crop_fraction")?.toFloat() ?: 0.875f,
                scale = Json.number(block, "scale")?.toFloat() ?: (1f / 127.5f),
                offset = Json.number(block, "offset")?.toFloat() ?: -1f
            )
        }
    }
}

/** An 8-bit RGB image, row-major, 3 bytes per pixel (values 0..255 stored in an IntArray for speed). */
class RgbImage(val width: Int, val height: Int, val data: IntArray) {
    init {
        require(data.size == width * height * 3) { "expected ${width * height * 3} values, got ${data.size}" }
    }
}

object FrameProcessor {

    /**
     * YUV_420_888 planes (as CameraX ImageProxy gives them) to RGB, full-range BT.601 (JFIF), the
     * camera's colour space. Strides follow the Image.Plane contract, so semi-planar (NV21/NV12,
     * pixelStride 2) and planar (I420, pixelStride 1) layouts both work.
     */
    fun yuvToRgb(
        y: ByteArray, u: ByteArray, v: ByteArray, width: Int, height: Int,
        yRowStride: Int, uvRowStride: Int, uvPixelStride: Int
    ): RgbImage {
        val out = IntArray(width * height * 3)
        var o = 0
        for (row in 0 until height) {
            val uvRow = (row shr 1) * uvRowStride
            for (col in 0 until width) {
                val yy = (y[row * yRowStride + col].toInt() and 0xFF).toFloat()
                val uvIndex = uvRow + (col shr 1) * uvPixelStride
                val cb = (u[uvIndex].toInt() and 0xFF) - 128f
                val cr = (v[uvIndex].toInt() and 0xFF) - 128f
                out[o++] = clamp8(yy + 1.402f * cr)
                out[o++] = clamp8(yy - 0.344136f * cb - 0.714136f * cr)
                out[o++] = clamp8(yy + 1.772f * cb)
            }
        }
        return RgbImage(width, height, out)
    }

    /** Rotates clockwise by 0, 90, 180 or 270 degrees (ImageInfo.rotationDegrees). */
    fun rotate(img: RgbImage, degrees: Int): RgbImage {
        val d = ((degrees % 360) + 360) % 360
        if (d == 0) return img
        require(d % 90 == 0) { "rotation must be a multiple of 90, got $degrees" }
        val w = img.width
        val h = img.height
        val nw = if (d == 180) w else h
        val nh = if (d == 180) h else w
        val out = IntArray(nw * nh * 3)
        for (y in 0 until h) for (x in 0 until w) {
            val nx: Int
            val ny: Int
            when (d) {
                90 -> { nx = h - 1 - y; ny = x }
                180 -> { nx = w - 1 - x; ny = h - 1 - y }
                else -> { nx = y; ny = w - 1 - x }
            }
            val s = (y * w + x) * 3
            val t = (ny * nw + nx) * 3
            out[t] = img.data[s]; out[t + 1] = img.data[s + 1]; out[t + 2] = img.data[s + 2]
        }
        return RgbImage(nw, nh, out)
    }

    /** (top, left, side) of the centered square covering `fraction` of the shorter side. */
    fun centerCropBox(height: Int, width: Int, fraction: Float): IntArray {
        val side = Math.max(1, Math.round(Math.min(height, width) * fraction.toDouble()).toInt())
        return intArrayOf((height - side) / 2, (width - side) / 2, side)
    }

    /** Center crop + bilinear resize to size x size, rounded to 8 bits like OpenCV on uint8 images. */
    fun cropResize(img: RgbImage, pre: Preprocessing): RgbImage {
        val box = centerCropBox(img.height, img.width, pre.cropFraction)
        val top = box[0]
        val left = box[1]
        val side = box[2]
        val n = pre.size
        val out = IntArray(n * n * 3)
        val ratio = side.toDouble() / n
        for (oy in 0 until n) {
            var sy = (oy + 0.5) * ratio - 0.5
            if (sy < 0) sy = 0.0
            var y0 = Math.floor(sy).toInt()
            if (y0 > side - 1) y0 = side - 1
            val y1 = Math.min(y0 + 1, side - 1)
            val fy = sy - y0
            for (ox in 0 until n) {
                var sx = (ox + 0.5) * ratio - 0.5
                if (sx < 0) sx = 0.0
                var x0 = Math.floor(sx).toInt()
                if (x0 > side - 1) x0 = side - 1
                val x1 = Math.min(x0 + 1, side - 1)
                val fx = sx - x0
                for (c in 0 until 3) {
                    val p00 = img.data[((top + y0) * img.width + left + x0) * 3 + c]
                    val p01 = img.data[((top + y0) * img.width + left + x1) * 3 + c]
                    val p10 = img.data[((top + y1) * img.width + left + x0) * 3 + c]
                    val p11 = img.data[((top + y1) * img.width + left + x1) * 3 + c]
                    val v = (1 - fy) * ((1 - fx) * p00 + fx * p01) + fy * ((1 - fx) * p10 + fx * p11)
                    out[(oy * n + ox) * 3 + c] = Math.min(255, Math.max(0, Math.round(v).toInt()))
                }
            }
        }
        return RgbImage(n, n, out)
    }

    /** NHWC float input: x * scale + offset. */
    fun normalize(img: RgbImage, pre: Preprocessing): FloatArray =
        FloatArray(img.data.size) { img.data[it] * pre.scale + pre.offset }

    /** The NHWC float image as contiguous NCHW, for an ExecuTorch program whose manifest's io.layout is NCHW
     *  (`--input-layout nchw`, and every .pte before it); a channels-last program (NHWC, the xnnpack default)
     *  takes the NHWC array as it is. ExecuTorch copies input bytes without checking their order. */
    fun toNchw(x: FloatArray, size: Int, channels: Int = 3): FloatArray {
        require(x.size == size * size * channels) { "expected ${size}x${size}x$channels values, got ${x.size}" }
        val out = FloatArray(x.size)
        for (c in 0 until channels) for (p in 0 until size * size) out[c * size * size + p] = x[p * channels + c]
        return out
    }

    /** The byte order a .pte's manifest says its image input takes: io.layout, NCHW when absent (schema 1). */
    fun programLayout(manifest: String): String =
        Json.objectField(manifest, "io")?.let { Json.string(it, "layout") } ?: "NCHW"

    /** int8 input tensor for a full-integer model: round(x / scale) + zeroPoint, clamped to [-128, 127]. */
    fun quantize(x: FloatArray, scale: Float, zeroPoint: Int): ByteArray =
        ByteArray(x.size) { Math.min(127, Math.max(-128, Math.round(x[it] / scale) + zeroPoint)).toByte() }

    /** uint8 input tensor (`--io uint8`): round(x / scale) + zeroPoint, clamped to [0, 255], as unsigned bytes.
     *  With a toolkit int8 artifact's own preprocessing (mean 128, std 127.5) this gives back the pixels. */
    fun quantizeUint8(x: FloatArray, scale: Float, zeroPoint: Int): ByteArray =
        ByteArray(x.size) { Math.min(255, Math.max(0, Math.round(x[it] / scale) + zeroPoint)).toByte() }

    /** The whole path: camera planes to the model's float input. */
    fun process(
        y: ByteArray, u: ByteArray, v: ByteArray, width: Int, height: Int, yRowStride: Int,
        uvRowStride: Int, uvPixelStride: Int, rotationDegrees: Int, pre: Preprocessing
    ): FloatArray {
        val rgb = yuvToRgb(y, u, v, width, height, yRowStride, uvRowStride, uvPixelStride)
        return normalize(cropResize(rotate(rgb, rotationDegrees), pre), pre)
    }

    private fun clamp8(x: Float): Int = Math.min(255, Math.max(0, Math.round(x)))
}
