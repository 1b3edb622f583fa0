// Fused softmax + cross-entropy over the vocabulary: per-token losses and the logits' gradient in one pass.
using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Algorithms;

namespace L2L.Kernels;

/// <summary>
/// Softmax cross-entropy per row of logits (N, V). A group handles one row at a time (grid-stride over
/// rows) and reduces through shared memory, so any group size up to
/// <see cref="GroupReduce.MaxGroupSize"/> works. The row maximum is subtracted before exponentiating,
/// so huge logits and all-equal rows are exact to float rounding. A target equal to
/// <c>ignoreIndex</c> gives loss 0 and a zero gradient row; any other target outside <c>[0, V)</c>
/// gives NaN, so a bad label is visible instead of silently read out of bounds.
/// </summary>
public static class CrossEntropyKernels
{
    /// <summary>
    /// <c>losses[r] = -log softmax(logits[r])[targets[r]]</c> and
    /// <c>dLogits[r] = (softmax(logits[r]) - onehot(targets[r])) * dLossScale</c>.
    /// Shapes: <c>losses</c> (N); <c>dLogits</c>, <c>logits</c> (N, V); <c>targets</c> (N) int32.
    /// <c>dLogits</c> may alias <c>logits</c>: the target logit is read by every thread before the first
    /// barrier, and afterwards each thread rewrites only the elements it alone read.
    /// </summary>
    public static void CrossEntropyForwardBackwardKernel(
        ArrayView<float> losses, ArrayView<float> dLogits, ArrayView<float> logits, ArrayView<int> targets,
        int n, int v, float dLossScale, int ignoreIndex) =>
        CrossEntropyForwardBackwardGenericKernel<float, Fp32Storage>(losses, dLogits, logits, targets, n, v, dLossScale, ignoreIndex);

    /// <summary>
    /// <see cref="CrossEntropyForwardBackwardKernel"/> with <c>logits</c> and <c>dLogits</c> in a storage type: the
    /// max, the sum of exponentials and the loss are FP32, each gradient is rounded once. The same aliasing rule holds.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void CrossEntropyForwardBackwardGenericKernel<T, S>(
        ArrayView<float> losses, ArrayView<T> dLogits, ArrayView<T> logits, ArrayView<int> targets,
        int n, int v, float dLossScale, int ignoreIndex)
        where T : unmanaged where S : struct, IStorage<T>
    {
        var st = default(S);
        var shared = SharedMemory.Allocate<float>(GroupReduce.MaxGroupSize);
        int tid = Group.IdxX;
        int threads = Group.DimX;
        for (int row = Grid.IdxX; row < n; row += Grid.DimX)
        {
            long offset = (long)row * v;
            int target = targets[row];
            if (target == ignoreIndex)
            {
                // Uniform across the group, so skipping the barriers below is safe.
                for (int j = tid; j < v; j += threads)
                    dLogits[offset + j] = st.FromFloat(0f);
                if (tid == 0)
                    losses[row] = 0f;
                continue;
            }
            bool valid = target >= 0 && target < v;
            float targetLogit = valid ? st.ToFloat(logits[offset + target]) : float.NaN;

            float max = RowMax<T, S>(shared, logits, offset, v);
            float sum = RowSumExp<T, S>(shared, logits, offset, v, max);
            float inverse = 1f / sum;
            for (int j = tid; j < v; j += threads)
            {
                float p = XMath.Exp(st.ToFloat(logits[offset + j]) - max) * inverse;
                float indicator = j == target ? 1f : 0f;
                dLogits[offset + j] = st.FromFloat(valid ? (p - indicator) * dLossScale : float.NaN);
            }
            if (tid == 0)
                losses[row] = XMath.Log(sum) + (max - targetLogit);
        }
    }

    /// <summary>
    /// <c>losses[r] = -log softmax(logits[r])[targets[r]]</c> only. Shapes: <c>losses</c> (N);
    /// <c>logits</c> (N, V); <c>targets</c> (N) int32.
    /// </summary>
    public static void CrossEntropyForwardKernel(
        ArrayView<float> losses, ArrayView<float> logits, ArrayView<int> targets, int n, int v, int ignoreIndex) =>
        CrossEntropyForwardGenericKernel<float, Fp32Storage>(losses, logits, targets, n, v, ignoreIndex);

    /// <summary><see cref="CrossEntropyForwardKernel"/> with <c>logits</c> in a storage type; the loss is computed in FP32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void CrossEntropyForwardGenericKernel<T, S>(
        ArrayView<float> losses, ArrayView<T> logits, ArrayView<int> targets, int n, int v, int ignoreIndex)
        where T : unmanaged where S : struct, IStorage<T>
    {
        var st = default(S);
        var shared = SharedMemory.Allocate<float>(GroupReduce.MaxGroupSize);
        for (int row = Grid.IdxX; row < n; row += Grid.DimX)
        {
            long offset = (long)row * v;
            int target = targets[row];
            if (target == ignoreIndex)
            {
                if (Group.IdxX == 0)
                    losses[row] = 0f;
                continue;
            }
            bool valid = target >= 0 && target < v;
            float targetLogit = valid ? st.ToFloat(logits[offset + target]) : float.NaN;
            float max = RowMax<T, S>(shared, logits, offset, v);
            float sum = RowSumExp<T, S>(shared, logits, offset, v, max);
            if (Group.IdxX == 0)
                losses[row] = XMath.Log(sum) + (max - targetLogit);
        }
    }

    private static float RowMax<T, S>(ArrayView<float> shared, ArrayView<T> logits, long offset, int v)
        where T : unmanaged where S : struct, IStorage<T>
    {
        float max = float.NegativeInfinity;
        for (int j = Group.IdxX; j < v; j += Group.DimX)
            max = XMath.Max(max, default(S).ToFloat(logits[offset + j]));
        return GroupReduce.Max(shared, max);
    }

    private static float RowSumExp<T, S>(ArrayView<float> shared, ArrayView<T> logits, long offset, int v, float max)
        where T : unmanaged where S : struct, IStorage<T>
    {
        float sum = 0f;
        for (int j = Group.IdxX; j < v; j += Group.DimX)
            sum += XMath.Exp(default(S).ToFloat(logits[offset + j]) - max);
        return GroupReduce.Sum(shared, sum);
    }
}
