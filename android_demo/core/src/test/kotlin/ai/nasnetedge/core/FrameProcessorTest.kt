package ai.nasnetedge.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Test

class FrameProcessorTest {
    @Test
    fun grayYuvIsGrayRgb() {
        val w = 4
        val h = 2
        val y = ByteArray(w * h) { 100 }
        val u = ByteArray(w * h / 4) { 128.toByte() }
        val v = ByteArray(w * h / 4) { 128.toByte() }
        val rgb = FrameProcessor.yuvToRgb(y, u, v, w, h, w, w / 2, 1)
        assertTrue(rgb.data.all { it == 100 })
    }

    @Test
    fun semiPlanarAndPlanarLayoutsAgree() {
        val w = 4
        val h = 4
        val y = ByteArray(w * h) { (it * 13).toByte() }
        val u = byteArrayOf(10, 60, 110, (-96).toByte())
        val v = byteArrayOf(200.toByte(), 150.toByte(), 30, 90)
        // interleaved VU as NV21 with pixelStride 2: the same chroma samples, other strides
        val uInter = ByteArray(8)
        val vInter = ByteArray(8)
        for (i in 0 until 4) { uInter[2 * i] = u[i]; vInter[2 * i] = v[i] }
        val planar = FrameProcessor.yuvToRgb(y, u, v, w, h, w, 2, 1)
        val semi = FrameProcessor.yuvToRgb(y, uInter, vInter, w, h, w, 4, 2)
        assertArrayEquals(planar.data, semi.data)
    }

    @Test
    fun nhwcToNchwMovesEachChannelToItsPlane() {
        // 2x2 image, 3 channels: value = 10 * pixel + channel
        val nhwc = FloatArray(12) { (10 * (it / 3) + it % 3).toFloat() }
        val nchw = FrameProcessor.toNchw(nhwc, 2)
        assertArrayEquals(floatArrayOf(0f, 10f, 20f, 30f, 1f, 11f, 21f, 31f, 2f, 12f, 22f, 32f), nchw, 0f)
    }

    @Test
    fun programLayoutComesFromTheManifestsIo() {
        val nhwc = "{\"io\": {\"input\": \"float\", \"output\": \"float\", \"layout\": \"NHWC\"}, \"labels\": [\"a\"]}"
        assertEquals("NHWC", FrameProcessor.programLayout(nhwc))
        assertEquals("NCHW", FrameProcessor.programLayout("{\"io\": {\"input\": \"float\", \"layout\": \"NCHW\"}}"))
        assertEquals("NCHW", FrameProcessor.programLayout("{\"io\": \"float32 NCHW in, float32 logits out\"}"))
    }

    @Test
    fun rotationsCompose() {
        val img = RgbImage(3, 2, IntArray(18) { it })
        val r90 = FrameProcessor.rotate(img, 90)
        assertEquals(2, r90.width)
        assertEquals(3, r90.height)
        val back = FrameProcessor.rotate(FrameProcessor.rotate(r90, 180), 90)
        assertArrayEquals(img.data, back.data)
    }

    @Test
    fun centerCropMatchesPython() {
        assertArrayEquals(intArrayOf(10, 10, 140), FrameProcessor.centerCropBox(160, 160, 0.875f))
        assertArrayEquals(intArrayOf(0, 140, 360), FrameProcessor.centerCropBox(360, 640, 1.0f))
    }

    @Test
    fun quantizeRoundsAndClamps() {
        val q = FrameProcessor.quantize(floatArrayOf(-1f, 0f, 1f, 5f), 1f / 127.5f, -1)
        assertArrayEquals(byteArrayOf(-128, -1, 126, 127), q)
    }

    @Test
    fun pixelGridQuantizesBackToThePixels() {
        // a toolkit int8 artifact: preprocessing mean 128 / std 127.5, input scale 1/127.5, zero point 128 (uint8) or 0 (int8)
        val pre = Preprocessing(size = 16, cropFraction = 1f, scale = 1f / 127.5f, offset = -128f / 127.5f)
        val pixels = IntArray(256 * 3) { (it / 3 + 85 * (it % 3)) % 256 }
        val x = FrameProcessor.normalize(RgbImage(256, 1, pixels), pre)
        val u8 = FrameProcessor.quantizeUint8(x, 1f / 127.5f, 128)
        assertArrayEquals(pixels, IntArray(u8.size) { u8[it].toInt() and 0xFF })
        val s8 = FrameProcessor.quantize(x, 1f / 127.5f, 0)
        assertArrayEquals(IntArray(pixels.size) { pixels[it] - 128 }, IntArray(s8.size) { s8[it].toInt() })
    }

    @Test
    fun uint8OutputsReadUnsigned() {
        val y = Classification.dequantizeUint8(byteArrayOf(0, 128.toByte(), 255.toByte()), 0.5f, 128)
        assertArrayEquals(floatArrayOf(-64f, 0f, 63.5f), y, 0f)
    }

    @Test
    fun topKAndSmoothing() {
        val labels = listOf("a", "b", "c")
        val top = Classification.topK(floatArrayOf(0.2f, 0.5f, 0.3f), labels, 2)
        assertEquals(listOf("b", "c"), top.map { it.label })
        val s = Smoother(0.5f)
        s.update(floatArrayOf(1f, 0f))
        val second = s.update(floatArrayOf(0f, 1f))
        assertEquals(0.5f, second[0], 1e-6f)
    }

    @Test
    fun manifestParsing() {
        val json = """{"labels": ["tench", "golf \"ball\""], "preprocessing": {"size": 192, "crop_fraction": 1.0,
            "scale": 0.0078431, "offset": -1.0, "mean": 127.5}}"""
        val pre = Preprocessing.fromManifest(json)
        assertEquals(192, pre.size)
        assertEquals(1.0f, pre.cropFraction, 0f)
        assertEquals(listOf("tench", "golf \"ball\""), Json.stringArray(json, "labels"))
    }
}
