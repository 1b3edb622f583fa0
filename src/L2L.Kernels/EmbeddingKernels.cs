// Token + position embedding: the first layer's forward and its parameter gradients.
using ILGPU;

namespace L2L.Kernels;

/// <summary>
/// Token and position embedding. B = sequences, T = positions, C = channels, V = vocabulary.
/// Token ids are trusted to be in <c>[0, V)</c>: the host validates them before upload.
/// </summary>
public static class EmbeddingKernels
{
    /// <summary>
    /// <c>output[r, j] = wte[tokens[r], j] + wpe[r % t, j]</c> for rows <c>r = b * T + t</c>.
    /// Shapes: <c>output</c> (B*T, C); <c>tokens</c> (B*T) int32; <c>wte</c> (V, C); <c>wpe</c> (maxT, C), maxT &gt;= T.
    /// </summary>
    public static void EmbeddingForwardKernel(
        ArrayView<float> output, ArrayView<int> tokens, ArrayView<float> wte, ArrayView<float> wpe, int t, int c) =>
        EmbeddingForwardGenericKernel<float, Fp32Storage>(output, tokens, wte, wpe, t, c);

    /// <summary><see cref="EmbeddingForwardKernel"/> over a storage type: the two rows are added in FP32 and rounded once.</summary>
    public static void EmbeddingForwardGenericKernel<T, S>(
        ArrayView<T> output, ArrayView<int> tokens, ArrayView<T> wte, ArrayView<T> wpe, int t, int c)
        where T : unmanaged where S : struct, IStorage<T>
    {
        var st = default(S);
        long stride = Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < output.Length; i += stride)
        {
            long row = i / c;
            long j = i - row * c;
            long position = row % t;
            output[i] = st.FromFloat(st.ToFloat(wte[(long)tokens[row] * c + j]) + st.ToFloat(wpe[position * c + j]));
        }
    }

    /// <summary>
    /// <c>dWte[token, j] += sum of dOutput[r, j] over the rows r holding that token</c>, without atomics:
    /// the host groups the rows by token into a plan (see <c>EmbeddingScatterPlan</c>), and one thread
    /// per (distinct token, channel) sums its rows in a fixed order, so the result is deterministic and
    /// NaN or infinite gradients cannot stall a compare-and-swap loop. Shapes: <c>dWte</c> (V, C);
    /// <c>dOutput</c> (N, C); <c>plan</c> (3N + 1) int32: rows ordered by token at [0, N), segment starts
    /// at [N, N + segments + 1), each segment's token at [2N + 1, 2N + 1 + segments). Each sum is multiplied by
    /// <c>scale</c> before it is added (1: unchanged bit for bit).
    /// </summary>
    public static void EmbeddingBackwardTokenKernel(
        ArrayView<float> dWte, ArrayView<float> dOutput, ArrayView<int> plan, int rows, int segments, int c, float scale) =>
        EmbeddingBackwardTokenGenericKernel<float, Fp32Storage>(dWte, dOutput, plan, rows, segments, c, scale);

    /// <summary>
    /// <see cref="EmbeddingBackwardTokenKernel"/> with <c>dOutput</c> in a storage type: rows widened, summed in FP32
    /// and added to the FP32 <c>dWte</c>.
    /// </summary>
    public static void EmbeddingBackwardTokenGenericKernel<T, S>(
        ArrayView<float> dWte, ArrayView<T> dOutput, ArrayView<int> plan, int rows, int segments, int c, float scale)
        where T : unmanaged where S : struct, IStorage<T>
    {
        var st = default(S);
        long stride = Grid.DimX * Group.DimX;
        long count = (long)segments * c;
        for (long i = Grid.GlobalIndex.X; i < count; i += stride)
        {
            int segment = (int)(i / c);
            long j = i - (long)segment * c;
            int begin = plan[rows + segment];
            int end = plan[rows + segment + 1];
            float sum = 0f;
            for (int k = begin; k < end; k++)
                sum += st.ToFloat(dOutput[(long)plan[k] * c + j]);
            long token = plan[2 * rows + 1 + segment];
            dWte[token * c + j] += sum * scale;
        }
    }

    /// <summary>
    /// <c>dWpe[p, j] += sum over b of dOutput[b * T + p, j]</c> for positions <c>p &lt; T</c>; deterministic
    /// (one thread per element of <c>dWpe</c>, summing the batch in order). Shapes: <c>dWpe</c> (maxT, C);
    /// <c>dOutput</c> (B*T, C). Each sum is multiplied by <c>scale</c> before it is added (1: unchanged bit for bit).
    /// </summary>
    public static void EmbeddingBackwardPositionKernel(
        ArrayView<float> dWpe, ArrayView<float> dOutput, int b, int t, int c, float scale) =>
        EmbeddingBackwardPositionGenericKernel<float, Fp32Storage>(dWpe, dOutput, b, t, c, scale);

    /// <summary>
    /// <see cref="EmbeddingBackwardPositionKernel"/> with <c>dOutput</c> in a storage type: summed in FP32 into the
    /// FP32 <c>dWpe</c>.
    /// </summary>
    public static void EmbeddingBackwardPositionGenericKernel<T, S>(
        ArrayView<float> dWpe, ArrayView<T> dOutput, int b, int t, int c, float scale)
        where T : unmanaged where S : struct, IStorage<T>
    {
        var st = default(S);
        long stride = Grid.DimX * Group.DimX;
        long count = (long)t * c;
        long batchStride = (long)t * c;
        for (long i = Grid.GlobalIndex.X; i < count; i += stride)
        {
            float sum = 0f;
            for (int s = 0; s < b; s++)
                sum += st.ToFloat(dOutput[s * batchStride + i]);
            dWpe[i] += sum * scale;
        }
    }
}
